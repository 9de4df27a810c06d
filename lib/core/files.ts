/**
 * The files a user names, handled safely: reading regular files only (config.json, hparams), and
 * making output directories without hanging. A FIFO, device
 * or directory is ERR_IO at once, never waited on (opening a FIFO for reading blocks until a writer
 * appears; O_NONBLOCK makes the open return so fstat can refuse it).
 */
import * as fs from 'fs'
import * as path from 'path'
import { mendError } from './errors'

/** The text of a regular file; ERR_IO naming it when it cannot be read or is not a regular file. */
export function readRegularFileSync(file: string): string {
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0))
  } catch (e) {
    throw mendError('ERR_IO', `cannot read ${file}: ${(e as Error).message}`)
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw mendError('ERR_IO', `cannot read ${file}: not a regular file`)
    return fs.readFileSync(fd, 'utf8')
  } catch (e) {
    if (e instanceof Error && (e as { code?: string }).code === 'ERR_IO') throw e
    throw mendError('ERR_IO', `cannot read ${file}: ${(e as Error).message}`)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Creates `dir` and its missing parents (like `mkdir -p`), one level at a time, so that a parent
 * where directories cannot be made (/proc, /sys) is ERR_IO at once: Node's recursive mkdir loops
 * forever there (mkdir gives ENOENT under an existing parent). An existing non-directory is ERR_IO.
 */
export function makeDirectory(dir: string): void {
  const missing: string[] = []
  let p = path.resolve(dir)
  for (;;) {
    let st: fs.Stats | undefined
    try {
      st = fs.statSync(p)
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT') throw mendError('ERR_IO', `cannot create ${dir}: ${(e as Error).message}`)
    }
    if (st) {
      if (!st.isDirectory()) throw mendError('ERR_IO', `cannot create ${dir}: ${p} is not a directory`)
      break
    }
    missing.push(p)
    const up = path.dirname(p)
    if (up === p) break
    p = up
  }
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d)
    } catch (e) {
      if ((e as { code?: string }).code === 'EEXIST' && fs.statSync(d).isDirectory()) continue
      throw mendError('ERR_IO', `cannot create ${dir}: ${(e as Error).message}`)
    }
  }
}
