import type { GlobalThemeOverrides } from 'naive-ui'

export const FONT_SANS =
  'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC", sans-serif'
export const FONT_MONO =
  'ui-monospace, SFMono-Regular, "JetBrains Mono", Menlo, Consolas, "Liberation Mono", "Noto Sans Mono CJK SC", monospace'

const ACCENT = { base: '#3b6ef5', hover: '#5a86f7', pressed: '#2f5bd6', suppl: '#5a86f7' }
const ACCENT_DARK = { base: '#7395ff', hover: '#8ea9ff', pressed: '#5f82ee', suppl: '#8ea9ff' }

export function themeOverrides(dark: boolean): GlobalThemeOverrides {
  const a = dark ? ACCENT_DARK : ACCENT
  return {
    common: {
      fontFamily: FONT_SANS,
      fontFamilyMono: FONT_MONO,
      primaryColor: a.base,
      primaryColorHover: a.hover,
      primaryColorPressed: a.pressed,
      primaryColorSuppl: a.suppl,
      borderRadius: '8px',
      borderRadiusSmall: '6px',
      ...(dark
        ? {
            bodyColor: '#17181b',
            cardColor: '#1e1f23',
            modalColor: '#1e1f23',
            popoverColor: '#25262b',
            tableColor: '#1e1f23',
          }
        : { bodyColor: '#ffffff', cardColor: '#ffffff' }),
    },
  }
}
