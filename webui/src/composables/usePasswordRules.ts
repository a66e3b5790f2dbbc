/** Minimum length the UI asks for; the server enforces its own policy and its message is shown on refusal. */
export const MIN_PASSWORD = 8
