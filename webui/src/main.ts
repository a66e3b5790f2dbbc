import { createApp } from 'vue'
import { createPinia } from 'pinia'
import App from './App.vue'
import { i18n } from './i18n'
import { createAppRouter } from './router'
import { configureAuth } from './api/http'
import { useAuthStore } from './stores/auth'
import './styles/main.css'

const app = createApp(App)
const pinia = createPinia()
app.use(pinia)
app.use(i18n)
const router = createAppRouter()
app.use(router)

const auth = useAuthStore(pinia)
configureAuth({
  getToken: () => auth.accessToken,
  refresh: () => auth.refresh(),
  onSessionLost: () => {
    auth.clear()
    const cur = router.currentRoute.value
    if (cur.name !== 'login') {
      void router.replace({ name: 'login', query: { redirect: cur.fullPath, expired: '1' } })
    }
  },
  onPasswordChangeRequired: () => {
    auth.markPasswordChangeRequired()
    const cur = router.currentRoute.value
    if (cur.name !== 'change-password')
      void router.replace({ name: 'change-password', query: { redirect: cur.fullPath } })
  },
})

app.mount('#app')
