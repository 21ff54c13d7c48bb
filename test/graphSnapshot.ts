/**
 * Records the program's graph (test/program/graph.snapshot.json) for test/program/graph.test.ts:
 * run it when a change to what `pulumi up` does is meant, and commit the snapshot with the change.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { canonical, graphOf } from "./support/graph";
import { runProgram } from "./support/program";

void (async () => {
  const g = graphOf((await runProgram()).rec);
  const file = path.join(__dirname, "program", "graph.snapshot.json");
  const sorted = Object.fromEntries(Object.keys(g).sort().map((k) => [k, g[k]]));
  fs.writeFileSync(file, JSON.stringify(JSON.parse(canonical(sorted)), null, 1) + "\n");
  console.log(`${Object.keys(g).length} resources -> ${path.relative(process.cwd(), file)}`);
  process.exit(0);
})();
