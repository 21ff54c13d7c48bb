/**
 * Output names made unique across pods: every pod counts ComfyUI_00001_.png from 1, so each file a pod
 * reports is presented under subfolder "<prompt_id>[/<pod's subfolder>]" — in events, history and /view.
 */
export interface FileRef { filename: string; subfolder: string; type: string }

function isFileRef(v: unknown): v is FileRef {
  return !!v && typeof v === "object" && typeof (v as FileRef).filename === "string" && typeof (v as FileRef).type === "string";
}

export function rewriteSubfolder(promptId: string, sub: string | undefined | null): string {
  return sub ? `${promptId}/${sub}` : promptId;
}

/** Files of type output/temp in a UI output dict ({images: [...], gifs: [...]}). */
export function fileRefs(output: unknown): FileRef[] {
  const out: FileRef[] = [];
  if (!output || typeof output !== "object") return out;
  for (const v of Object.values(output as Record<string, unknown>)) {
    if (!Array.isArray(v)) continue;
    for (const item of v) if (isFileRef(item) && (item.type === "output" || item.type === "temp")) out.push(item);
  }
  return out;
}

/**
 * A copy of a UI output dict with every output/temp file moved under the prompt's subfolder; files for
 * which `kept` is false (not copied from the pod) are left out, so no client is pointed at a missing file.
 */
export function rewriteOutput(promptId: string, output: unknown, kept: (f: FileRef) => boolean = () => true): unknown {
  if (!output || typeof output !== "object") return output;
  const res: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(output as Record<string, unknown>)) {
    res[k] = Array.isArray(v)
      ? v
          .filter((item) => !(isFileRef(item) && (item.type === "output" || item.type === "temp")) || kept(item))
          .map((item) => (isFileRef(item) && (item.type === "output" || item.type === "temp") ? { ...item, subfolder: rewriteSubfolder(promptId, item.subfolder) } : item))
      : v;
  }
  return res;
}

export function rewriteOutputs(promptId: string, outputs: Record<string, unknown>, kept?: (f: FileRef) => boolean): Record<string, unknown> {
  return Object.fromEntries(Object.entries(outputs ?? {}).map(([node, o]) => [node, rewriteOutput(promptId, o, kept)]));
}

/** Object key of a pod file in the gateway's store: "<type>/<prompt_id>/<subfolder>/<filename>". */
export function storeKey(promptId: string, ref: FileRef): string {
  return [ref.type, promptId, ...(ref.subfolder ? ref.subfolder.split("/") : []), ref.filename].join("/");
}

/**
 * The owner's prefix inside the outputs and temp stores: every user's files under their own key prefix
 * ("u-" keeps "." and ".." out; the id is URI-encoded into one path segment).
 */
export function ownerPrefix(owner: string): string {
  return `u-${encodeURIComponent(owner)}`;
}
