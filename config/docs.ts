/**
 * Writes the README's configuration table from config/schema.ts (`npm run docs:config`), so the
 * table is never edited by hand; test/config/schema.test.ts fails while the two differ.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { configTableMarkdown } from ".";

/** The table's lines in the README: from its header row to the first line that is not a row. */
export function readmeConfigTable(readme: string): { start: number; end: number } {
  const start = readme.indexOf("| key | default | meaning |", readme.indexOf("## Configuration"));
  if (start < 0) throw new Error("README.md: no configuration table under ## Configuration");
  let end = start;
  while (end < readme.length && readme[end] === "|") end = readme.indexOf("\n", end) + 1 || readme.length;
  return { start, end };
}

if (require.main === module) {
  const file = path.join(__dirname, "..", "README.md");
  const readme = fs.readFileSync(file, "utf8");
  const { start, end } = readmeConfigTable(readme);
  fs.writeFileSync(file, readme.slice(0, start) + configTableMarkdown() + "\n" + readme.slice(end));
  console.log("README.md: configuration table written from config/schema.ts");
}
