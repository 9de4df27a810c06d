// Runs the CLI's main() in-process with stdout and stderr captured (restored afterwards, also when
// main rejects), for tests that assert on what a command printed.
import { main } from '../../lib/app/cli'

export async function runMain(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const out: string[] = []
  const err: string[] = []
  const w = process.stdout.write.bind(process.stdout)
  const we = process.stderr.write.bind(process.stderr)
  process.stdout.write = ((s: string) => { out.push(String(s)); return true }) as typeof process.stdout.write
  process.stderr.write = ((s: string) => { err.push(String(s)); return true }) as typeof process.stderr.write
  try {
    await main(['node', 'node-mend', ...args])
  } finally {
    process.stdout.write = w
    process.stderr.write = we
  }
  return { stdout: out.join(''), stderr: err.join('') }
}
