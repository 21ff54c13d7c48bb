/** The gateway's error catalogue: each code has one HTTP status; ComfyUI-shaped bodies where ComfyUI has one. */
export const ERRORS = {
  GW_ERR_INVALID_JSON: { status: 400, type: "invalid_json", message: "Request body is not valid JSON" },
  GW_ERR_NO_PROMPT: { status: 400, type: "no_prompt", message: "No prompt provided" },
  GW_ERR_INVALID_PROMPT_ID: { status: 400, type: "invalid_prompt_id", message: "Invalid prompt_id: must be a canonical lowercase UUID" },
  GW_ERR_INVALID_PROMPT: { status: 400, type: "invalid_prompt", message: "Invalid prompt" },
  GW_ERR_PROMPT_TOO_LARGE: { status: 413, type: "prompt_too_large", message: "Prompt too large to store" },
  GW_ERR_BAD_PATH: { status: 400, type: "invalid_path", message: "Invalid file path" },
  GW_ERR_BAD_TYPE: { status: 400, type: "unsupported_file_type", message: "This kind of file is not accepted" },
  GW_ERR_FORBIDDEN: { status: 403, type: "forbidden", message: "Not allowed" },
  GW_ERR_NOT_FOUND: { status: 404, type: "not_found", message: "Not found" },
  GW_ERR_NO_POD: { status: 503, type: "no_pod", message: "No ComfyUI pod is ready and nothing is cached for this request yet" },
  GW_ERR_NO_LEADER: { status: 503, type: "no_leader", message: "No gateway leader answers right now (a hand-over takes a few seconds); retry" },
  GW_ERR_NOT_LEADER: { status: 503, type: "not_leader", message: "This gateway replica is not the leader" },
} as const;
export type ErrorCode = keyof typeof ERRORS;

export class GatewayError extends Error {
  readonly status: number;
  constructor(readonly code: ErrorCode, details?: string, options?: { cause?: unknown }) {
    super(details ? `${ERRORS[code].message}: ${details}` : ERRORS[code].message, options);
    this.name = "GatewayError";
    this.status = ERRORS[code].status;
  }
  /** ComfyUI's `{"error": {type, message, details, extra_info}, "node_errors": {}}` shape. */
  body() {
    const e = ERRORS[this.code];
    return { error: { type: e.type, message: e.message, details: this.message, extra_info: {} }, node_errors: {} };
  }
}

/** Canonical lowercase UUID, as newer ComfyUI requires of a client-chosen prompt_id. */
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
