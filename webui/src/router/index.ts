import { createRouter, createWebHistory, type RouteLocationNormalized, type Router } from 'vue-router'
import { useAuthStore } from '@/stores/auth'

declare module 'vue-router' {
  interface RouteMeta {
    public?: boolean
    admin?: boolean
    titleKey?: string
  }
}

export function createAppRouter(): Router {
  const router = createRouter({
    history: createWebHistory('/'),
    routes: [
      {
        path: '/login',
        name: 'login',
        component: () => import('@/views/auth/LoginView.vue'),
        meta: { public: true, titleKey: 'auth.signIn' },
      },
      {
        path: '/change-password',
        name: 'change-password',
        component: () => import('@/views/auth/ChangePasswordView.vue'),
        meta: { titleKey: 'auth.changeTitle' },
      },
      {
        path: '/',
        component: () => import('@/components/layout/AppLayout.vue'),
        children: [
          { path: '', redirect: { name: 'chat' } },
          {
            path: 'chat/:id?',
            name: 'chat',
            component: () => import('@/views/chat/ChatView.vue'),
            meta: { titleKey: 'nav.chat' },
          },
          {
            path: 'models',
            name: 'models',
            component: () => import('@/views/models/ModelsView.vue'),
            meta: { titleKey: 'nav.models' },
          },
          {
            path: 'presets',
            name: 'presets',
            component: () => import('@/views/presets/PresetsView.vue'),
            meta: { titleKey: 'nav.presets' },
          },
          {
            path: 'knowledge/:id?',
            name: 'knowledge',
            component: () => import('@/views/knowledge/KnowledgeView.vue'),
            meta: { titleKey: 'nav.knowledge' },
          },
          {
            path: 'usage',
            name: 'usage',
            component: () => import('@/views/usage/UsageView.vue'),
            meta: { titleKey: 'nav.usage' },
          },
          {
            path: 'providers',
            name: 'providers',
            component: () => import('@/views/providers/ProvidersView.vue'),
            meta: { admin: true, titleKey: 'nav.providers' },
          },
          {
            path: 'users',
            name: 'users',
            component: () => import('@/views/users/UsersView.vue'),
            meta: { admin: true, titleKey: 'nav.users' },
          },
          {
            path: 'system',
            name: 'system',
            component: () => import('@/views/system/SystemView.vue'),
            meta: { admin: true, titleKey: 'nav.system' },
          },
          {
            path: 'setup',
            name: 'setup',
            component: () => import('@/views/setup/SetupView.vue'),
            meta: { admin: true, titleKey: 'setup.title' },
          },
          {
            path: 'settings',
            name: 'settings',
            component: () => import('@/views/settings/SettingsView.vue'),
            meta: { titleKey: 'nav.settings' },
          },
        ],
      },
      {
        path: '/:pathMatch(.*)*',
        name: 'not-found',
        component: () => import('@/views/NotFoundView.vue'),
        meta: { public: true },
      },
    ],
  })

  router.beforeEach(async (to: RouteLocationNormalized) => {
    const auth = useAuthStore()
    await auth.bootstrap()
    if (to.name === 'not-found') return true
    if (to.meta.public) {
      if (auth.isAuthenticated && to.name === 'login') {
        const r = typeof to.query.redirect === 'string' ? to.query.redirect : ''
        return safeRedirect(r)
      }
      return true
    }
    if (!auth.isAuthenticated) {
      return { name: 'login', query: to.fullPath !== '/' ? { redirect: to.fullPath } : {} }
    }
    if (auth.passwordChangeForced && to.name !== 'change-password') {
      return { name: 'change-password', query: to.fullPath !== '/' ? { redirect: to.fullPath } : {} }
    }
    if (!auth.mustChangePassword && to.name === 'change-password') return { name: 'chat' }
    if (to.meta.admin && !auth.isAdmin) return { name: 'chat' }
    return true
  })

  return router
}

/** Only same-app paths are followed after sign-in (no open redirect). */
export function safeRedirect(r: string | null | undefined): string {
  if (!r || !r.startsWith('/') || r.startsWith('//') || r.startsWith('/\\') || r.startsWith('/login')) return '/chat'
  return r
}
