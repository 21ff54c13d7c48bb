/**
 * Runs the whole program (index.ts) once under mocks with Pulumi.dev.yaml's config, the way
 * `pulumi up` would evaluate it, and hands every test the recorded resource graph and the outputs.
 */
import * as pulumi from "@pulumi/pulumi";
import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";
import { Recorder, installMocks, quiesce, unwrap } from "./mocks";

export const ROOT = path.join(__dirname, "..", "..");

/** Pulumi.<stack>.yaml's config as `pulumi.runtime.setAllConfig` wants it (lists/objects as JSON). */
export function stackConfig(stack = "dev"): Record<string, string> {
  const doc = yaml.load(fs.readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8")) as { config: Record<string, unknown> };
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(doc.config)) out[k] = typeof v === "string" ? v : JSON.stringify(v);
  return out;
}

export interface ProgramRun {
  rec: Recorder;
  outputs: Record<string, unknown>;
}

let run: Promise<ProgramRun> | undefined;

/** Evaluates index.ts once per test process (modules are cached, so once is all there is). */
export function runProgram(): Promise<ProgramRun> {
  run ??= (async () => {
    const rec = new Recorder();
    installMocks(rec, "dev", "comfyui-eks");
    pulumi.runtime.setAllConfig(stackConfig("dev"));
    const mod = (await import("../../index")) as Record<string, unknown>;
    const outputs: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(mod)) outputs[k] = await unwrap(v as pulumi.Input<unknown>);
    await quiesce(rec, 100);
    return { rec, outputs };
  })();
  return run;
}

/**
 * Evaluates index.ts once more, under fresh mocks, with Pulumi.dev.yaml's config plus `overrides`
 * (e.g. another gpuInstanceTypes), as a stack with that config would evaluate it. The program's
 * modules are loaded afresh for it (index.ts runs at import) and the dev run's modules and config
 * are put back afterwards, so tests that import the program later see what they saw before.
 */
export async function runProgramWith(overrides: Record<string, string>): Promise<ProgramRun> {
  await runProgram();
  const ours = (file: string) =>
    file.startsWith(ROOT + path.sep) && !file.includes(`${path.sep}node_modules${path.sep}`) && !file.startsWith(path.join(ROOT, "test") + path.sep);
  const saved = new Map(Object.entries(require.cache).filter(([file]) => ours(file)));
  for (const file of saved.keys()) delete require.cache[file];
  try {
    const rec = new Recorder();
    installMocks(rec, "dev", "comfyui-eks");
    pulumi.runtime.setAllConfig({ ...stackConfig("dev"), ...overrides });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(path.join(ROOT, "index")) as Record<string, unknown>;
    const outputs: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(mod)) outputs[k] = await unwrap(v as pulumi.Input<unknown>);
    await quiesce(rec, 100);
    return { rec, outputs };
  } finally {
    for (const file of Object.keys(require.cache)) if (ours(file)) delete require.cache[file];
    for (const [file, m] of saved) require.cache[file] = m;
    pulumi.runtime.setAllConfig(stackConfig("dev"));
  }
}
