// Loaded only when the dark theme is in use: Naive UI's dark theme carries every component's dark styles.
export { darkTheme } from 'naive-ui'
