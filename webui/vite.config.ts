import { defineConfig } from 'vitest/config'
import type { Plugin } from 'vite'
import { readFileSync } from 'node:fs'
import vue from '@vitejs/plugin-vue'
import VueI18nPlugin from '@intlify/unplugin-vue-i18n/vite'
import { fileURLToPath, URL } from 'node:url'

/**
 * Ships Swagger UI (the npm package swagger-ui-dist, no CDN) in dist/swagger-ui/ for the server's
 * /api/docs page (server/api/docs.py), so it is served from our own origin and packaged with the UI.
 */
function swaggerUiAssets(): Plugin {
  const files = ['swagger-ui-bundle.js', 'swagger-ui.css', 'LICENSE', 'NOTICE']
  return {
    name: 'modeltrain-swagger-ui',
    apply: 'build',
    generateBundle() {
      for (const file of files) {
        const source = readFileSync(new URL(`./node_modules/swagger-ui-dist/${file}`, import.meta.url))
        this.emitFile({ type: 'asset', fileName: `swagger-ui/${file}`, source })
      }
    },
  }
}

export default defineConfig({
  base: '/',
  plugins: [
    vue(),
    // precompiles the locale catalogs, so the runtime-only vue-i18n (no message compiler, no eval) is shipped
    VueI18nPlugin({
      include: [fileURLToPath(new URL('./src/i18n/locales/**', import.meta.url))],
      runtimeOnly: true,
      compositionOnly: true,
      fullInstall: false,
      strictMessage: false,
      escapeHtml: false,
    }),
    swaggerUiAssets(),
  ],
  resolve: {
    alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) },
  },
  define: {
    __VUE_OPTIONS_API__: 'false',
    __VUE_PROD_DEVTOOLS__: 'false',
    __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false',
  },
  server: {
    port: 5173,
    proxy: {
      '/api': { target: process.env.MODELTRAIN_API || 'http://127.0.0.1:8000', changeOrigin: false },
    },
  },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    sourcemap: false,
    chunkSizeWarningLimit: 900,
    target: 'es2022',
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.spec.ts'],
    globals: false,
  },
})
