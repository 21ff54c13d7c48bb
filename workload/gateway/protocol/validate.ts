/**
 * ComfyUI's validate_prompt, run by the gateway against the object info it serves, so a prompt is
 * refused with ComfyUI's own 400 shapes before it is stored (ComfyUI execution.py validate_prompt /
 * validate_inputs; shapes and rules as documented in shared/docs/comfyui-protocol.md §4, v0.3.64).
 */

export type ObjectInfo = Record<string, NodeInfo>;
export interface NodeInfo {
  input?: { required?: Record<string, unknown[]>; optional?: Record<string, unknown[]>; hidden?: Record<string, unknown> };
  output?: unknown[];
  output_node?: boolean;
  [k: string]: unknown;
}
export interface ErrorItem { type: string; message: string; details: string; extra_info: Record<string, unknown> }
export interface NodeErrors { [nodeId: string]: { errors: ErrorItem[]; dependent_outputs: string[]; class_type: string } }
export type ApiPrompt = Record<string, { class_type?: unknown; inputs?: Record<string, unknown>; _meta?: unknown }>;

export interface ValidationResult { ok: boolean; error?: ErrorItem; outputs: string[]; nodeErrors: NodeErrors }

/** A custom validator (ComfyUI's VALIDATE_INPUTS) for one class input: true, or a reason string. */
export type CustomValidator = (value: unknown) => true | string;

export interface ValidateOptions {
  partialTargets?: string[];
  /** key "<class>.<input>" → validator; replaces the built-in checks for that input. */
  custom?: Record<string, CustomValidator>;
}

/** Python's str() of a JSON-ish value, for ComfyUI-identical messages. */
export function pyStr(v: unknown): string {
  if (typeof v === "string") return v;
  return pyRepr(v);
}
function pyRepr(v: unknown): string {
  if (v === null || v === undefined) return "None";
  if (typeof v === "string") return `'${v.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "number") return Number.isInteger(v) && !Object.is(v, -0) ? String(v) : pyFloat(v);
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(", ")}}`;
}
function pyFloat(v: number): string {
  if (Number.isInteger(v)) return `${v}.0`;
  return String(v);
}
function numStr(v: number, isFloat: boolean): string {
  return isFloat ? pyFloat(v) : String(v);
}

function typeSet(t: string): string[] {
  return t.split(",").map((s) => s.trim());
}
/** ComfyUI validate_node_input: "*" matches anything; comma-separated sets match on overlap. */
function typesMatch(received: unknown, declared: unknown): boolean {
  if (typeof received !== "string" || typeof declared !== "string") return received === declared;
  if (received === "*" || declared === "*") return true;
  if (received === declared) return true;
  const r = typeSet(received);
  const d = typeSet(declared);
  return r.some((x) => d.includes(x));
}

type Verdict = [boolean, ErrorItem[], string];

export function validatePrompt(prompt: ApiPrompt, info: ObjectInfo, opts: ValidateOptions = {}): ValidationResult {
  for (const [id, node] of Object.entries(prompt)) {
    const ct = node && typeof node === "object" ? node.class_type : undefined;
    if (ct === undefined || ct === null) {
      return { ok: false, outputs: [], nodeErrors: {}, error: { type: "invalid_prompt", message: "Cannot execute because a node is missing the class_type property.", details: `Node ID '#${id}'`, extra_info: {} } };
    }
    if (typeof ct !== "string" || !(ct in info)) {
      return { ok: false, outputs: [], nodeErrors: {}, error: { type: "invalid_prompt", message: `Cannot execute because node ${pyStr(ct)} does not exist.`, details: `Node ID '#${id}'`, extra_info: {} } };
    }
  }
  let outputs = Object.keys(prompt).filter((id) => info[prompt[id].class_type as string].output_node === true);
  if (opts.partialTargets) outputs = outputs.filter((o) => opts.partialTargets!.includes(o));
  if (outputs.length === 0) {
    return { ok: false, outputs: [], nodeErrors: {}, error: { type: "prompt_no_outputs", message: "Prompt has no outputs", details: "", extra_info: {} } };
  }
  const validated = new Map<string, Verdict>();
  const good: string[] = [];
  const failed: [string, ErrorItem[]][] = [];
  const nodeErrors: NodeErrors = {};
  for (const o of outputs) {
    let verdict: Verdict;
    try {
      verdict = validateInputs(prompt, info, o, validated, opts);
    } catch (err: unknown) {
      verdict = [false, [{ type: "exception_during_validation", message: "Exception when validating node", details: String((err as Error).message ?? err), extra_info: { exception_type: "KeyError", traceback: [] } }], o];
      validated.set(o, verdict);
    }
    if (verdict[0]) {
      good.push(o);
      continue;
    }
    failed.push([o, verdict[1]]);
    for (const [nodeId, [valid, reasons]] of validated) {
      if (valid || reasons.length === 0) continue;
      nodeErrors[nodeId] ??= { errors: reasons, dependent_outputs: [], class_type: String(prompt[nodeId]?.class_type) };
      nodeErrors[nodeId].dependent_outputs.push(o);
    }
  }
  if (good.length === 0) {
    const details = failed.flatMap(([, errs]) => errs.map((e) => `${e.message}: ${e.details}`)).join("\n");
    return { ok: false, outputs: [], nodeErrors, error: { type: "prompt_outputs_failed_validation", message: "Prompt outputs failed validation", details, extra_info: {} } };
  }
  return { ok: true, outputs: good, nodeErrors };
}

function validateInputs(prompt: ApiPrompt, info: ObjectInfo, id: string, validated: Map<string, Verdict>, opts: ValidateOptions): Verdict {
  const seen = validated.get(id);
  if (seen) return seen;
  const node = prompt[id];
  if (!node) throw new Error(`'${id}'`);
  const classType = node.class_type as string;
  const cls = info[classType];
  if (!cls) throw new Error(`'${classType}'`);
  const inputs = (node.inputs ?? {}) as Record<string, unknown>;
  const required = cls.input?.required ?? {};
  const optional = cls.input?.optional ?? {};
  const errors: ErrorItem[] = [];
  let valid = true;
  for (const [name, spec] of [...Object.entries(required), ...Object.entries(optional)]) {
    const isRequired = name in required;
    if (!(name in inputs)) {
      if (isRequired) errors.push({ type: "required_input_missing", message: "Required input is missing", details: name, extra_info: { input_name: name } });
      continue;
    }
    let val = inputs[name];
    const typeInput = spec[0];
    const opt = (spec.length > 1 ? spec[1] : {}) as Record<string, unknown>;
    if (Array.isArray(val)) {
      if (val.length !== 2) {
        errors.push({ type: "bad_linked_input", message: "Bad linked input, must be a length-2 list of [node_id, slot_index]", details: name, extra_info: { input_name: name, input_config: spec, received_value: val } });
        continue;
      }
      const [srcId, slot] = val as [unknown, unknown];
      const src = prompt[String(srcId)];
      if (!src) throw new Error(`'${pyStr(srcId)}'`);
      const srcInfo = info[src.class_type as string];
      const ret = srcInfo?.output ?? [];
      const received = typeof slot === "number" ? ret[slot] : undefined;
      if (!typesMatch(received, typeInput)) {
        errors.push({ type: "return_type_mismatch", message: "Return type mismatch between linked nodes", details: `${name}, received_type(${pyStr(received)}) mismatch input_type(${pyStr(typeInput)})`, extra_info: { input_name: name, input_config: spec, received_type: received ?? null, linked_node: val } });
        continue;
      }
      try {
        const r = validateInputs(prompt, info, String(srcId), validated, opts);
        if (!r[0]) valid = false;
      } catch (err: unknown) {
        valid = false;
        validated.set(String(srcId), [false, [{ type: "exception_during_inner_validation", message: "Exception when validating inner node", details: String((err as Error).message ?? err), extra_info: { input_name: name, input_config: spec, exception_message: String((err as Error).message ?? err), exception_type: "KeyError", traceback: [], linked_node: val } }], String(srcId)]);
      }
      continue;
    }
    // Literal lists arrive wrapped as {"__value__": [...]}.
    if (val && typeof val === "object" && "__value__" in (val as object)) val = (val as { __value__: unknown }).__value__;
    const isFloat = typeInput === "FLOAT";
    try {
      if (typeInput === "INT") val = pyInt(val);
      else if (typeInput === "FLOAT") val = pyFloatConv(val);
      else if (typeInput === "STRING") val = pyStr(val);
      else if (typeInput === "BOOLEAN") val = pyBool(val);
    } catch (err: unknown) {
      const msg = (err as Error).message;
      errors.push({ type: "invalid_input_type", message: `Failed to convert an input value to a ${typeInput} value`, details: `${name}, ${pyStr(val)}, ${msg}`, extra_info: { input_name: name, input_config: spec, received_value: val, exception_message: msg } });
      continue;
    }
    if (typeof val === "number") {
      if (typeof opt.min === "number" && val < opt.min) {
        errors.push({ type: "value_smaller_than_min", message: `Value ${numStr(val, isFloat)} smaller than min of ${numStr(opt.min, isFloat)}`, details: name, extra_info: { input_name: name, input_config: spec, received_value: val } });
        continue;
      }
      if (typeof opt.max === "number" && val > opt.max) {
        errors.push({ type: "value_bigger_than_max", message: `Value ${numStr(val, isFloat)} bigger than max of ${numStr(opt.max, isFloat)}`, details: name, extra_info: { input_name: name, input_config: spec, received_value: val } });
        continue;
      }
    }
    const custom = opts.custom?.[`${classType}.${name}`];
    if (custom) {
      const r = custom(val);
      if (r !== true) {
        errors.push({ type: "custom_validation_failed", message: "Custom validation failed for node", details: `${name} - ${r}`, extra_info: { input_name: name, input_config: spec, received_value: val } });
      }
      continue;
    }
    if (Array.isArray(typeInput) && !typeInput.includes(val)) {
      const long = typeInput.length > 20;
      errors.push({ type: "value_not_in_list", message: "Value not in list", details: `${name}: '${pyStr(val)}' not in ${long ? `(list of length ${typeInput.length})` : pyRepr(typeInput)}`, extra_info: { input_name: name, input_config: long ? null : spec, received_value: val } });
    }
  }
  const verdict: Verdict = errors.length > 0 || !valid ? [false, errors, id] : [true, [], id];
  validated.set(id, verdict);
  return verdict;
}

function pyInt(v: unknown): number {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new Error("cannot convert float infinity to integer");
    return Math.trunc(v);
  }
  if (typeof v === "string" && /^\s*[-+]?\d+\s*$/.test(v)) return parseInt(v, 10);
  throw new Error(`invalid literal for int() with base 10: ${pyRepr(v)}`);
}
function pyFloatConv(v: unknown): number {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") return v;
  if (typeof v === "string" && v.trim() !== "" && !Number.isNaN(Number(v))) return Number(v);
  throw new Error(`could not convert string to float: ${pyRepr(v)}`);
}
function pyBool(v: unknown): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (v && typeof v === "object") return Object.keys(v).length > 0;
  return Boolean(v);
}
