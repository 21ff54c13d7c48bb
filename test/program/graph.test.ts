/**
 * The program's graph against the recorded one (graph.snapshot.json): code can move between files
 * and components, but what `pulumi up` does to a deployed stack may change only on purpose. A moved
 * resource keeps its URN or names the old one in `aliases`; a real change updates the snapshot
 * (`npm run graph:snapshot`) in the same commit, so the diff shows it.
 */
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { Graph, compareGraphs, graphOf } from "../support/graph";
import { runProgram } from "../support/program";

export const SNAPSHOT = path.join(__dirname, "graph.snapshot.json");

describe("the program graph", function () {
  it("is the recorded one: every resource found (by URN or alias) with the same inputs, provider and options", async () => {
    const now = graphOf((await runProgram()).rec);
    const recorded = JSON.parse(fs.readFileSync(SNAPSHOT, "utf8")) as Graph;
    const changes = compareGraphs(recorded, now);
    assert.deepEqual(changes, [], `the graph changed (npm run graph:snapshot if meant):\n${changes.map((c) => `${c.what}: ${c.urn}`).join("\n")}`);
  });

  it("compareGraphs sees a moved resource without an alias, a changed input and a lost one", () => {
    const before: Graph = {
      "urn:pulumi:dev::p::a:b:C::x": { type: "a:b:C", inputs: "1", provider: "", options: "o" },
      "urn:pulumi:dev::p::a:b:C::y": { type: "a:b:C", inputs: "2", provider: "", options: "o" },
      "urn:pulumi:dev::p::a:b:C::z": { type: "a:b:C", inputs: "3", provider: "", options: "o" },
      "urn:pulumi:dev::p::my:X$a:b:C::w": { type: "a:b:C", inputs: "4", provider: "", options: "o" },
      "urn:pulumi:dev::p::my:X$my:R$a:b:C::g": { type: "a:b:C", inputs: "5", provider: "", options: "o" },
    };
    const after: Graph = {
      "urn:pulumi:dev::p::my:Y$a:b:C::x": { type: "a:b:C", inputs: "1", provider: "", options: "o" },
      "urn:pulumi:dev::p::a:b:C::y": { type: "a:b:C", inputs: "2b", provider: "", options: "o" },
      // A child whose parent took an alias from the old parent is found through it.
      "urn:pulumi:dev::p::my:Z::c": { type: "my:Z", inputs: "", provider: "", options: "o", aliases: ["urn:pulumi:dev::p::my:X::c"] },
      "urn:pulumi:dev::p::my:Z$a:b:C::w": { type: "a:b:C", inputs: "4", provider: "", options: "o" },
      // A grandchild is found through its grandparent's alias, as the engine carries aliases down.
      "urn:pulumi:dev::p::my:Z$my:R::r": { type: "my:R", inputs: "", provider: "", options: "o" },
      "urn:pulumi:dev::p::my:Z$my:R$a:b:C::g": { type: "a:b:C", inputs: "5", provider: "", options: "o" },
    };
    const changes = compareGraphs(before, after).map((c) => `${c.what} ${c.urn.split("::").slice(2).join("::")}`);
    assert.deepEqual(changes.sort(), ["created my:Y$a:b:C::x", "created my:Z$my:R::r", "created my:Z::c", "deleted a:b:C::x", "deleted a:b:C::z", "inputs differ a:b:C::y"]);
  });
});
