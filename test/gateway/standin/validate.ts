// execution.py validate_prompt / validate_inputs of ComfyUI 0.3.64 (Comfy-Org/ComfyUI@a125cd84), line by
// line where it shapes what a client sees: error types, messages, details strings, node_errors, and the
// in-place coercion of constants (the queued prompt holds the coerced values).
import { NODE_CLASSES, NodeContext, NodeDef } from "./nodes";
import { PyError, pyBool, pyEq, pyFloat, pyInt, pyRepr, pyStr } from "./py";

export interface ErrorItem {
  type: string;
  message: string;
  details: string;
  extra_info: Record<string, unknown>;
}
export interface NodeError {
  errors: ErrorItem[];
  dependent_outputs: string[];
  class_type: string;
}
export interface ValidationResult {
  ok: boolean;
  error: ErrorItem | null;
  outputs: string[];
  nodeErrors: Record<string, NodeError>;
  /** "<node>\0<input>" of constants coerced to FLOAT (so PNG metadata prints them as Python floats). */
  floats: Set<string>;
}

type Prompt = Record<string, { class_type?: unknown; inputs?: Record<string, unknown> } & Record<string, unknown>>;
type Validated = Map<string, [boolean, ErrorItem[], string]>;

function getItem(obj: unknown, key: unknown): unknown {
  // prompt[o_id] on a dict: KeyError(o_id), whose str() is repr(o_id).
  if (obj === null || typeof obj !== "object" || Array.isArray(obj) || typeof key !== "string" || !(key in (obj as object))) {
    throw new PyError("KeyError", pyRepr(key));
  }
  return (obj as Record<string, unknown>)[key];
}

function tupleIndex(t: readonly unknown[], idx: unknown): unknown {
  if (typeof idx !== "number" || !Number.isInteger(idx) || typeof idx === "boolean") {
    throw new PyError("TypeError", `tuple indices must be integers or slices, not ${idx === null ? "NoneType" : typeof idx === "string" ? "str" : typeof idx === "number" ? "float" : Array.isArray(idx) ? "list" : "dict"}`);
  }
  const i = idx < 0 ? t.length + idx : idx;
  if (i < 0 || i >= t.length) throw new PyError("IndexError", "tuple index out of range");
  return t[i];
}

/** comfy_execution/validation.py validate_node_input (non-strict): equal, or comma-separated sets overlap. */
export function validateNodeInput(received: unknown, input: unknown): boolean {
  if (received === input) return true;
  if (typeof received !== "string" || typeof input !== "string") return false;
  const a = new Set(received.split(",").map((t) => t.trim()));
  return input.split(",").some((t) => a.has(t.trim()));
}

function inputInfo(spec: readonly unknown[]): [unknown, Record<string, unknown>] {
  return [spec[0], (spec[1] as Record<string, unknown> | undefined) ?? {}];
}

function validateInputs(ctx: NodeContext, prompt: Prompt, uniqueId: string, validated: Validated, floats: Set<string>): [boolean, ErrorItem[], string] {
  const done = validated.get(uniqueId);
  if (done) return done;
  const node = getItem(prompt, uniqueId) as Record<string, unknown>;
  const inputs = getItem(node, "inputs") as Record<string, unknown>;
  const classType = getItem(node, "class_type") as string;
  const def = NODE_CLASSES.get(classType) as NodeDef;
  const classInputs = def.inputTypes(ctx);
  const required = classInputs.required ?? {};
  const optional = classInputs.optional ?? {};
  const validInputs = [...new Set([...Object.keys(required), ...Object.keys(optional)])];
  const errors: ErrorItem[] = [];
  let valid = true;
  const validateArgs = def.validateInputs?.args ?? [];

  for (const x of validInputs) {
    const category = x in required ? "required" : "optional";
    const [inputType, extra] = inputInfo((x in required ? required[x] : optional[x]) as unknown[]);
    if (!(x in inputs)) {
      if (category === "required") {
        errors.push({ type: "required_input_missing", message: "Required input is missing", details: x, extra_info: { input_name: x } });
      }
      continue;
    }
    let val = inputs[x];
    const info = [inputType, extra];
    if (Array.isArray(val)) {
      if (val.length !== 2) {
        errors.push({
          type: "bad_linked_input",
          message: "Bad linked input, must be a length-2 list of [node_id, slot_index]",
          details: x,
          extra_info: { input_name: x, input_config: info, received_value: val },
        });
        continue;
      }
      const oId = val[0];
      const oNode = getItem(prompt, oId) as Record<string, unknown>;
      const oClass = NODE_CLASSES.get(getItem(oNode, "class_type") as string);
      if (!oClass) throw new PyError("KeyError", pyRepr(oNode.class_type));
      const receivedType = tupleIndex(oClass.output, val[1]);
      if (!validateNodeInput(receivedType, inputType)) {
        errors.push({
          type: "return_type_mismatch",
          message: "Return type mismatch between linked nodes",
          details: `${x}, received_type(${pyStr(receivedType)}) mismatch input_type(${pyStr(inputType)})`,
          extra_info: { input_name: x, input_config: info, received_type: receivedType, linked_node: val },
        });
        continue;
      }
      try {
        const r = validateInputs(ctx, prompt, oId as string, validated, floats);
        if (!r[0]) {
          valid = false;
          continue;
        }
      } catch (ex) {
        valid = false;
        const e = ex instanceof PyError ? ex : new PyError("Exception", String(ex));
        validated.set(oId as string, [
          false,
          [
            {
              type: "exception_during_inner_validation",
              message: "Exception when validating inner node",
              details: e.message,
              extra_info: { input_name: x, input_config: info, exception_message: e.message, exception_type: e.pyType, traceback: [], linked_node: val },
            },
          ],
          oId as string,
        ]);
        continue;
      }
    } else {
      try {
        if (val !== null && typeof val === "object" && "__value__" in (val as object)) {
          val = (val as Record<string, unknown>).__value__;
          inputs[x] = val;
        }
        if (inputType === "INT") inputs[x] = val = pyInt(val);
        if (inputType === "FLOAT") {
          inputs[x] = val = pyFloat(val);
          floats.add(`${uniqueId}\0${x}`);
        }
        if (inputType === "STRING") inputs[x] = val = pyStr(val);
        if (inputType === "BOOLEAN") inputs[x] = val = pyBool(val);
      } catch (ex) {
        const e = ex as PyError;
        errors.push({
          type: "invalid_input_type",
          message: `Failed to convert an input value to a ${pyStr(inputType)} value`,
          details: `${x}, ${pyStr(val)}, ${e.message}`,
          extra_info: { input_name: x, input_config: info, received_value: val, exception_message: e.message },
        });
        continue;
      }
      if (!validateArgs.includes(x)) {
        const isFloat = inputType === "FLOAT";
        if ("min" in extra && (val as number) < (extra.min as number)) {
          errors.push({
            type: "value_smaller_than_min",
            message: `Value ${fmtNum(val, isFloat)} smaller than min of ${fmtNum(extra.min, isFloat)}`,
            details: x,
            extra_info: { input_name: x, input_config: info, received_value: val },
          });
          continue;
        }
        if ("max" in extra && (val as number) > (extra.max as number)) {
          errors.push({
            type: "value_bigger_than_max",
            message: `Value ${fmtNum(val, isFloat)} bigger than max of ${fmtNum(extra.max, isFloat)}`,
            details: x,
            extra_info: { input_name: x, input_config: info, received_value: val },
          });
          continue;
        }
        if (Array.isArray(inputType)) {
          if (!inputType.some((o) => pyEq(o, val))) {
            // "Don't send back gigantic lists like if they're lots of scanned model filepaths"
            const long = inputType.length > 20;
            errors.push({
              type: "value_not_in_list",
              message: "Value not in list",
              details: `${x}: '${pyStr(val)}' not in ${long ? `(list of length ${inputType.length})` : pyRepr(inputType)}`,
              extra_info: { input_name: x, input_config: long ? null : info, received_value: val },
            });
            continue;
          }
        }
      }
    }
  }

  if (def.validateInputs) {
    // get_input_data(inputs, …, outputs=None): links become None; only the validator's arguments are passed.
    const args: Record<string, unknown> = {};
    for (const a of def.validateInputs.args) if (a in inputs) args[a] = Array.isArray(inputs[a]) ? null : inputs[a];
    for (const a of def.validateInputs.args) {
      if (!(a in args)) throw new PyError("TypeError", `${def.name}.VALIDATE_INPUTS() missing 1 required positional argument: '${a}'`);
      if (typeof args[a] !== "string") throw new PyError("AttributeError", `'${args[a] === null ? "NoneType" : typeof args[a]}' object has no attribute 'endswith'`);
    }
    const r = def.validateInputs.fn(ctx, args);
    if (r !== true) {
      for (const a of Object.keys(args)) {
        errors.push({ type: "custom_validation_failed", message: "Custom validation failed for node", details: `${a} - ${r}`, extra_info: { input_name: a } });
      }
    }
  }

  const ret: [boolean, ErrorItem[], string] = errors.length > 0 || !valid ? [false, errors, uniqueId] : [true, [], uniqueId];
  validated.set(uniqueId, ret);
  return ret;
}

function fmtNum(n: unknown, isFloat: boolean): string {
  if (typeof n !== "number") return pyStr(n);
  if (isFloat && Number.isInteger(n) && Math.abs(n) < 1e16) return n.toFixed(1);
  if (!isFloat && n === 0xffffffffffffffff) return "18446744073709551615";
  return pyRepr(n);
}

/** validate_prompt(prompt_id, prompt, partial_execution_targets). Mutates `prompt` (coercion), as ComfyUI does. */
export function validatePrompt(ctx: NodeContext, prompt: Prompt, partialTargets: unknown): ValidationResult {
  const floats = new Set<string>();
  const fail = (error: ErrorItem): ValidationResult => ({ ok: false, error, outputs: [], nodeErrors: {}, floats });
  const outputs: string[] = [];
  for (const x of Object.keys(prompt)) {
    const node = prompt[x];
    if (node === null || typeof node !== "object" || !("class_type" in node)) {
      return fail({ type: "invalid_prompt", message: "Cannot execute because a node is missing the class_type property.", details: `Node ID '#${x}'`, extra_info: {} });
    }
    const def = typeof node.class_type === "string" ? NODE_CLASSES.get(node.class_type) : undefined;
    if (!def) {
      return fail({ type: "invalid_prompt", message: `Cannot execute because node ${pyStr(node.class_type)} does not exist.`, details: `Node ID '#${x}'`, extra_info: {} });
    }
    const targeted = partialTargets === null || partialTargets === undefined || ((Array.isArray(partialTargets) || typeof partialTargets === "string") && partialTargets.includes(x));
    if (def.outputNode && targeted) {
      outputs.push(x);
    }
  }
  if (outputs.length === 0) return fail({ type: "prompt_no_outputs", message: "Prompt has no outputs", details: "", extra_info: {} });

  const good: string[] = [];
  const errors: [string, ErrorItem[]][] = [];
  const nodeErrors: Record<string, NodeError> = {};
  const validated: Validated = new Map();
  for (const o of outputs) {
    let valid = false;
    let reasons: ErrorItem[] = [];
    try {
      const m = validateInputs(ctx, prompt, o, validated, floats);
      valid = m[0];
      reasons = m[1];
    } catch (ex) {
      const e = ex instanceof PyError ? ex : new PyError("Exception", String(ex));
      reasons = [{ type: "exception_during_validation", message: "Exception when validating node", details: e.message, extra_info: { exception_type: e.pyType, traceback: [] } }];
      validated.set(o, [false, reasons, o]);
    }
    if (valid) {
      good.push(o);
    } else {
      errors.push([o, reasons]);
      for (const [nodeId, [ok, rs]] of validated) {
        // Nodes downstream of a failing node are invalid without errors of their own: not reported.
        if (!ok && rs.length > 0) {
          if (!(nodeId in nodeErrors)) {
            nodeErrors[nodeId] = { errors: rs, dependent_outputs: [], class_type: prompt[nodeId].class_type as string };
          }
          nodeErrors[nodeId].dependent_outputs.push(o);
        }
      }
    }
  }
  if (good.length === 0) {
    const lines = errors.flatMap(([, es]) => es.map((e) => `${e.message}: ${e.details}`));
    return {
      ok: false,
      error: { type: "prompt_outputs_failed_validation", message: "Prompt outputs failed validation", details: lines.join("\n"), extra_info: {} },
      outputs: [],
      nodeErrors,
      floats,
    };
  }
  return { ok: true, error: null, outputs: good, nodeErrors, floats };
}
