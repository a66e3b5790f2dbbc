import { describe, expect, it } from 'vitest'
import { isActive, modelNameOf } from './status'

describe('knowledge status helpers', () => {
  it('polls only while something is queued or indexing', () => {
    expect(isActive('queued')).toBe(true)
    expect(isActive('indexing')).toBe(true)
    expect(isActive('ready')).toBe(false)
    expect(isActive('error')).toBe(false)
    expect(isActive(undefined)).toBe(false)
  })

  it('names the embedding model of a catalog id', () => {
    const pid = '0b5c7d8e-1f2a-4b3c-9d4e-5f6a7b8c9d0e'
    expect(modelNameOf(`ollama:${pid}:nomic-embed-text:latest`)).toBe('nomic-embed-text:latest')
    expect(modelNameOf(`openai:${pid}:~${btoa('text embedding/3 small').replace(/=+$/, '')}`)).toBe(
      'text embedding/3 small',
    )
    expect(modelNameOf('group:farm:bge-m3')).toBe('group:farm:bge-m3')
    expect(modelNameOf(null)).toBe('')
  })
})
