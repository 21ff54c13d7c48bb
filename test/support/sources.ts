/**
 * The repository's own source files, for tests that read code as text (where a rule or a pin is
 * spelled, how long a component is): relative paths with "/", outside dependencies, build output,
 * tests, benchmarks and docs.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ROOT } from "./program";

const NOT_SOURCE = new Set(["node_modules", "test", "bin", "dist", ".git", "bench", "docs"]);

/** Files below `dir` (relative to the root) whose name matches `ext`, leaving out the folders in `skip`. */
export function sourceFiles(ext: RegExp, dir = ".", skip: readonly string[] = []): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.posix.join(dir, e.name);
    if (e.isDirectory()) return NOT_SOURCE.has(e.name) || skip.includes(rel) ? [] : sourceFiles(ext, rel, skip);
    return ext.test(e.name) ? [rel] : [];
  });
}
