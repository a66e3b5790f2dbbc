// Loaded on demand the first time a message contains math (keeps KaTeX out of the initial bundle).
import katex from 'katex'
import 'katex/dist/katex.min.css'

export default katex
