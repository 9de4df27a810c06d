/**
 * GPT-2's byte-level alphabet: the byte -> printable unicode char table (bytes_to_unicode in
 * OpenAI's encoder.py), shared by the tokenizer and the BPE trainer.
 */

/** BYTE_TO_CHAR[b] is the character byte b is written as in vocab.json / merges.txt. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array(256)
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)
  let n = 0
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable(b) ? b : 256 + n++)
  return table
})()
