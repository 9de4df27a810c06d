/**
 * Error type shared by node-mend modules. Every error thrown deliberately by
 * the library is a MendError carrying a stable string `code` (e.g. 'ERR_IO',
 * 'ERR_TOKENIZER') so callers can branch on it without parsing messages.
 */
export class MendError extends Error {
  code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'MendError';
    this.code = code;
  }
}

/** Convenience factory: `throw mendError('ERR_IO', 'cannot read ' + path)`. */
export function mendError(code: string, message: string): MendError {
  return new MendError(code, message);
}
