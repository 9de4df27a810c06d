/**
 * The files a user names, handled safely: reading regular files only (config.json, hparams),
 * making output directories without hanging, and writing files atomically. A FIFO, device
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

let tmpCounter = 0

/**
 * Writes `data` to `file` atomically: a temporary file of this write alone next to it, fsynced,
 * then renamed over `file` (and the directory synced, best effort). A failed or interrupted write
 * never leaves a partial or wrong file at `file`. Errors are ERR_IO naming the file.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}-${tmpCounter++}`
  let fd: number | undefined
  try {
    fd = fs.openSync(tmp, 'wx', 0o644)
    fs.writeFileSync(fd, data)
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    fd = undefined
    fs.renameSync(tmp, file)
  } catch (e) {
    if (fd !== undefined) try { fs.closeSync(fd) } catch { /* already failing */ }
    try { fs.unlinkSync(tmp) } catch { /* not created */ }
    throw mendError('ERR_IO', `cannot write ${file}: ${(e as Error).message}`)
  }
  try {
    const dfd = fs.openSync(path.dirname(file), 'r')
    try { fs.fsyncSync(dfd) } finally { fs.closeSync(dfd) }
  } catch { /* directory fsync is not available everywhere */ }
}
