/**
 * A Docker build context as CodeBuild's S3 source wants it: one zip whose bytes depend only on the
 * files' paths, contents and executable bit (sorted entries, fixed timestamps). Its content hash
 * decides whether a build is needed: the same files give the same hash, whatever their mtimes.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { zipSync, type Zippable } from "fflate";

export interface ContextFile {
  /** Path inside the context, "/"-separated, relative to the repository root. */
  path: string;
  data: Buffer;
  executable: boolean;
}

/** The DOS epoch: the earliest time a zip entry can carry, used for every entry. */
const FIXED_MTIME = new Date(1980, 0, 1, 0, 0, 0);

/**
 * Reads `entries` (files or folders, relative to `root`) into a sorted list of files. Folders are
 * walked recursively; a path that escapes `root` or does not exist is an error naming it.
 */
export function collectContext(root: string, entries: string[]): ContextFile[] {
  if (entries.length === 0) throw new Error("image context: no files or folders given");
  const rootAbs = path.resolve(root);
  const files = new Map<string, ContextFile>();
  const add = (abs: string) => {
    const st = fs.lstatSync(abs);
    const rel = path.relative(rootAbs, abs).split(path.sep).join("/");
    if (st.isSymbolicLink()) throw new Error(`image context: ${rel} is a symbolic link (the archive would not reproduce it)`);
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(abs).sort()) add(path.join(abs, name));
    } else if (st.isFile()) {
      files.set(rel, { path: rel, data: fs.readFileSync(abs), executable: (st.mode & 0o111) !== 0 });
    }
  };
  for (const entry of entries) {
    const abs = path.resolve(rootAbs, entry);
    const rel = path.relative(rootAbs, abs);
    if (rel === "" || rel.startsWith("..") || path.isAbsolute(rel)) {
      throw new Error(`image context: '${entry}' is not inside the repository root ${rootAbs}`);
    }
    if (!fs.existsSync(abs)) throw new Error(`image context: '${entry}' does not exist under ${rootAbs}`);
    add(abs);
  }
  return [...files.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** sha256 over every file's path, executable bit and content digest, in sorted order. */
export function contextHash(files: ContextFile[]): string {
  const h = crypto.createHash("sha256");
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    h.update(`${f.path}\0${f.executable ? "x" : "-"}\0${crypto.createHash("sha256").update(f.data).digest("hex")}\n`);
  }
  return h.digest("hex");
}

/** The zip CodeBuild unpacks as the build's working directory; byte-identical for identical files. */
export function contextArchive(files: ContextFile[]): Buffer {
  const tree: Zippable = {};
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    // Unix mode in the external attributes so CodeBuild's unzip keeps scripts executable.
    const mode = f.executable ? 0o100755 : 0o100644;
    tree[f.path] = [new Uint8Array(f.data), { mtime: FIXED_MTIME, os: 3, attrs: (mode << 16) >>> 0, level: 9 }];
  }
  return Buffer.from(zipSync(tree));
}
