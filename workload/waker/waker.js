// @ts-check
/* eslint-disable @typescript-eslint/no-require-imports -- this file runs as plain CommonJS from a ConfigMap on node:20-alpine, with no build step and no node_modules */
'use strict';

/**
 * ComfyUI waker: the always-on CPU endpoint that stands in for ComfyUI while it is scaled to zero.
 *
 * It sits behind the same ALB target group as the ComfyUI pods, but tells the ALB health checker
 * that it is healthy only while no ComfyUI pod is ready, so users reach it only when there is no
 * GPU. Every user request it sees is "demand", which it reports on a separate metrics port for
 * KEDA's metrics-api scaler; that is how the GPU Deployment wakes from zero (a scaler reading
 * metrics from the GPU pods themselves cannot, as there are none to read).
 *
 * Only node: built-ins are used, so the image can be a stock node:20-alpine with this one file.
 */

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const DELETION_COST_ANNOTATION = 'controller.kubernetes.io/pod-deletion-cost';
const WAKER_HEADER = 'x-comfyui-waker';
// The pod-deletion-cost annotation is an int32.
const MAX_DELETION_COST = 2147483647;
// How often the waiting page asks whether ComfyUI is ready.
const PAGE_POLL_MS = 3000;
// A client that honours Retry-After must come back before the demand window closes, or KEDA may
// see a gap in demand while the GPU is still starting; 30 s also keeps the wait short once it is up.
const MAX_RETRY_AFTER_SECONDS = 30;
const READINESS_TIMEOUT_MS = 2000;
const POD_QUERY_TIMEOUT_MS = 2000;
const KUBE_TIMEOUT_MS = 5000;

/**
 * @typedef {object} WakerOptions
 * @property {string} comfyuiUrl Base URL of a Service that selects only *ready* ComfyUI pods.
 * @property {number} [port] Port the ALB targets (default 8848; 0 picks a free one).
 * @property {number} [metricsPort] Port for KEDA's /demand and the liveness /healthz (default 9090).
 * @property {string} [host] Listen address (default: all interfaces, IPv4 and IPv6).
 * @property {number} [demandWindowSeconds] A request keeps demand at 1 for this long (default 120).
 * @property {number} [expectedWakeSeconds] Documented cold start, the base of the ETA (default 180).
 * @property {number} [reloadDelaySeconds] Time the ALB needs to take the waker out (default 15).
 * @property {number} [checkIntervalSeconds] Period of the ComfyUI readiness check (default 5).
 * @property {number} [checkTimeoutMs] Timeout of one readiness check (default 2000, at most the interval).
 * @property {number} [keepAliveSeconds] Idle keep-alive timeout of the ALB-facing port (default 4005).
 * @property {string} [kubeApiUrl] Kubernetes API base URL; enables the pod-deletion-cost loop.
 * @property {string | (() => string)} [kubeToken] Bearer token, or a function that reads it each round.
 * @property {string | Buffer} [kubeCa] CA bundle for an https kubeApiUrl.
 * @property {string} [namespace] Namespace of the ComfyUI pods.
 * @property {string} [podSelector] Label selector of the ComfyUI pods.
 * @property {number} [costIntervalSeconds] Period of the pod-deletion-cost loop (default 10).
 * @property {number} [comfyuiPodPort] ComfyUI's container port (default 8848).
 * @property {(podIP: string, podName: string) => string} [podPromptUrl] URL of one pod's GET /prompt.
 * @property {(entry: LogEntry) => void} [log] Receives one object per log line (default: JSON to stdout).
 */

/** @typedef {{ level: 'info' | 'warn' | 'error', msg: string, [field: string]: unknown }} LogEntry */

/**
 * @typedef {object} Waker
 * @property {() => Promise<{ port: number, metricsPort: number }>} start
 * @property {() => Promise<void>} close
 */

/**
 * @typedef {object} KubePod
 * @property {{ name?: string, annotations?: Record<string, string>, deletionTimestamp?: string }} [metadata]
 * @property {{ phase?: string, podIP?: string, conditions?: Array<{ type?: string, status?: string }> }} [status]
 */

class ConfigError extends Error {}

/** @param {LogEntry} entry */
function logToStdout(entry) {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
}

/** @param {unknown} err */
function errorMessage(err) {
  return err instanceof Error ? err.message : String(err);
}

/**
 * A small HTTP(S) client: `agent: false` so that no pooled socket outlives close(), a hard timeout,
 * and a cap on what is read into memory.
 *
 * @param {string} url
 * @param {{ method?: string, headers?: Record<string, string>, body?: string, timeoutMs: number,
 *           maxBytes?: number, ca?: string | Buffer, signal?: AbortSignal }} opts
 * @returns {Promise<{ status: number, headers: http.IncomingHttpHeaders, body: string }>}
 */
function httpRequest(url, opts) {
  const target = new URL(url);
  const client = target.protocol === 'https:' ? https : http;
  const maxBytes = opts.maxBytes ?? 1024 * 1024;
  return new Promise((resolve, reject) => {
    let settled = false;
    /** @param {Error | null} err @param {{ status: number, headers: http.IncomingHttpHeaders, body: string }} [value] */
    const settle = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else if (value) resolve(value);
    };
    const req = client.request(
      target,
      { method: opts.method ?? 'GET', headers: opts.headers, agent: false, ca: opts.ca, signal: opts.signal },
      (res) => {
        /** @type {Buffer[]} */
        const chunks = [];
        let size = 0;
        res.on('data', (/** @type {Buffer} */ chunk) => {
          size += chunk.length;
          if (size > maxBytes) req.destroy(new Error(`response larger than ${maxBytes} bytes`));
          else chunks.push(chunk);
        });
        res.on('end', () =>
          settle(null, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', (err) => settle(err));
      },
    );
    const timer = setTimeout(() => req.destroy(new Error(`timed out after ${opts.timeoutMs} ms`)), opts.timeoutMs);
    req.on('error', (err) => settle(err));
    req.on('close', () => settle(new Error('connection closed before the response ended')));
    req.end(opts.body);
  });
}

/**
 * ComfyUI's queue length (running + pending), or null when it cannot be read.
 *
 * @param {string} url
 * @param {number} timeoutMs
 * @param {AbortSignal} signal
 */
async function readQueueRemaining(url, timeoutMs, signal) {
  try {
    const res = await httpRequest(url, { timeoutMs, signal, headers: { 'user-agent': 'comfyui-waker' } });
    if (res.status !== 200 || res.headers[WAKER_HEADER]) return null;
    const n = JSON.parse(res.body)?.exec_info?.queue_remaining;
    return Number.isInteger(n) && n >= 0 ? /** @type {number} */ (n) : null;
  } catch {
    return null;
  }
}

/** @param {string} host */
function urlHost(host) {
  return host.includes(':') ? `[${host}]` : host;
}

/** @param {KubePod} pod */
function isServingPod(pod) {
  const status = pod.status ?? {};
  return (
    status.phase === 'Running' &&
    Boolean(status.podIP) &&
    Boolean(pod.metadata?.name) &&
    !pod.metadata?.deletionTimestamp &&
    (status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True')
  );
}

// ---------------------------------------------------------------------------------------------
// The waiting page. Static style and script, so that a hash-based CSP can allow exactly them; the
// only dynamic values are numbers from the waker's own configuration and clock.

const PAGE_STYLE = `
:root { color-scheme: light dark; --fg: #1d2330; --bg: #f5f6f8; --card: #fff; --muted: #5b6475; --accent: #3b6fd8; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8eaf0; --bg: #14161b; --card: #1e2129; --muted: #a3abbd; --accent: #7aa2ff; } }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: var(--bg); color: var(--fg);
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { width: min(34rem, calc(100vw - 2rem)); padding: 2rem; background: var(--card); border-radius: 12px;
  box-shadow: 0 2px 16px rgba(0, 0, 0, .12); }
h1 { margin: 0 0 .75rem; font-size: 1.35rem; }
.status { margin: 0 0 1rem; font-size: 1.15rem; font-weight: 600; }
progress { width: 100%; height: .9rem; accent-color: var(--accent); }
.elapsed { margin: .5rem 0 1.25rem; color: var(--muted); font-variant-numeric: tabular-nums; }
.note { margin: 0; color: var(--muted); font-size: .95rem; }
`;

// Runs in the browser (ES2017, no modules). It never reads anything from the URL or the page's
// text, only the numeric data- attributes and /waker/status.
const PAGE_SCRIPT = `
(function () {
  "use strict";
  var root = document.getElementById("waker");
  function num(name) { var v = Number(root.getAttribute("data-" + name)); return isFinite(v) ? v : 0; }
  var expected = num("expected");
  var reloadDelayMs = num("reload-delay") * 1000;
  var pollMs = num("poll-ms") || 3000;
  var statusEl = document.getElementById("status");
  var progressEl = document.getElementById("progress");
  var elapsedEl = document.getElementById("elapsed");
  var startedAt = Date.now() - num("waiting") * 1000;
  var etaAt = Date.now() + num("eta") * 1000;
  var leaving = false;

  // Only real changes are written, so that screen readers announce the live region once per change.
  function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
  function minutes(seconds) {
    var m = Math.max(1, Math.ceil(seconds / 60));
    return "about " + m + (m === 1 ? " minute" : " minutes");
  }
  function clock(seconds) {
    var s = Math.max(0, Math.floor(seconds)), m = Math.floor(s / 60), r = s % 60;
    return m + ":" + (r < 10 ? "0" : "") + r;
  }
  function render() {
    if (leaving) return;
    var now = Date.now();
    var left = (etaAt - now) / 1000;
    setText(elapsedEl, "Waiting for " + clock((now - startedAt) / 1000));
    if (left > 0) {
      progressEl.value = Math.min(expected, Math.max(0, expected - left));
      setText(statusEl, "GPU starting \\u2014 " + minutes(left));
    } else {
      progressEl.removeAttribute("value");
      setText(statusEl, "GPU starting \\u2014 any moment now (taking longer than usual)");
    }
  }
  function reload() { leaving = true; location.reload(); }
  function connect() {
    leaving = true;
    progressEl.value = progressEl.max;
    setText(statusEl, "Ready, connecting\\u2026");
    setTimeout(function () { location.reload(); }, reloadDelayMs);
  }
  function poll() {
    fetch("/waker/status", { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (res) {
        if (res.headers.get("x-comfyui-waker") !== "1") {
          // A load balancer or CDN error between targets is not ComfyUI: reloading would only
          // show that error page, so keep polling as for a network error.
          if (res.status === 502 || res.status === 503 || res.status === 504) return;
          reload();
          return;
        }
        return res.json().then(function (s) {
          if (s.ready) { connect(); return; }
          var now = Date.now();
          startedAt = now - (Number(s.waitingSeconds) || 0) * 1000;
          etaAt = now + (Number(s.etaSeconds) || 0) * 1000;
          render();
        }, reload);
      })
      .catch(function () { /* network error: the next poll will tell */ })
      .then(function () { if (!leaving) setTimeout(poll, pollMs); });
  }
  if (root.getAttribute("data-ready") === "1") { connect(); return; }
  render();
  setInterval(render, 1000);
  setTimeout(poll, pollMs);
})();
`;

/** @param {string} text */
function cspHash(text) {
  return `'sha256-${crypto.createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

const PAGE_CSP = [
  "default-src 'none'",
  `script-src ${cspHash(PAGE_SCRIPT)}`,
  `style-src ${cspHash(PAGE_STYLE)}`,
  "connect-src 'self'",
  'img-src data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** @param {number} n */
function int(n) {
  return String(Number.isFinite(n) ? Math.max(0, Math.round(n)) : 0);
}

/** @param {number} seconds */
function minutesText(seconds) {
  const m = Math.max(1, Math.ceil(seconds / 60));
  return `about ${m} ${m === 1 ? 'minute' : 'minutes'}`;
}

/** @param {number} seconds */
function clockText(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/**
 * @param {{ ready: boolean, waitingSeconds: number, etaSeconds: number, expectedSeconds: number,
 *           reloadDelaySeconds: number }} s
 */
function renderPage(s) {
  const status = s.ready
    ? 'Ready, connecting\u2026'
    : s.etaSeconds > 0
      ? `GPU starting \u2014 ${minutesText(s.etaSeconds)}`
      : 'GPU starting \u2014 any moment now (taking longer than usual)';
  const progressValue = s.etaSeconds > 0 ? ` value="${int(s.expectedSeconds - s.etaSeconds)}"` : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Starting a GPU \u00b7 ComfyUI</title>
<link rel="icon" href="data:,">
<style>${PAGE_STYLE}</style>
</head>
<body>
<main id="waker" data-expected="${int(s.expectedSeconds)}" data-eta="${int(s.etaSeconds)}" data-waiting="${int(s.waitingSeconds)}" data-reload-delay="${int(s.reloadDelaySeconds)}" data-poll-ms="${PAGE_POLL_MS}" data-ready="${s.ready ? 1 : 0}">
<h1>Starting a GPU for ComfyUI</h1>
<p id="status" class="status" role="status" aria-live="polite" aria-atomic="true">${status}</p>
<progress id="progress" max="${int(s.expectedSeconds) === '0' ? 1 : int(s.expectedSeconds)}"${progressValue} aria-label="GPU start-up progress"></progress>
<p id="elapsed" class="elapsed">Waiting for ${clockText(s.waitingSeconds)}</p>
<p class="note">No GPU worker was running, so one is starting now. This page opens ComfyUI by itself as soon as it is ready; there is no need to reload it.</p>
<noscript><p class="note">JavaScript is off: reload this page in a few minutes.</p></noscript>
</main>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
}

// ---------------------------------------------------------------------------------------------

/**
 * @param {WakerOptions} options
 * @returns {Waker}
 */
function createWaker(options) {
  if (!options || typeof options.comfyuiUrl !== 'string' || !/^https?:\/\//.test(options.comfyuiUrl)) {
    throw new ConfigError('comfyuiUrl must be an http(s) URL');
  }
  const log = options.log ?? logToStdout;
  const port = options.port ?? 8848;
  const metricsPort = options.metricsPort ?? 9090;
  const windowMs = (options.demandWindowSeconds ?? 120) * 1000;
  const expectedWakeSeconds = options.expectedWakeSeconds ?? 180;
  const reloadDelaySeconds = options.reloadDelaySeconds ?? 15;
  const checkIntervalMs = (options.checkIntervalSeconds ?? 5) * 1000;
  const checkTimeoutMs = Math.min(options.checkTimeoutMs ?? READINESS_TIMEOUT_MS, checkIntervalMs);
  const readinessUrl = `${options.comfyuiUrl.replace(/\/+$/, '')}/prompt`;
  const costIntervalMs = (options.costIntervalSeconds ?? 10) * 1000;
  const comfyuiPodPort = options.comfyuiPodPort ?? 8848;
  const podPromptUrl =
    options.podPromptUrl ?? ((/** @type {string} */ ip) => `http://${urlHost(ip)}:${comfyuiPodPort}/prompt`);
  const costEnabled = Boolean(options.kubeApiUrl && options.namespace && options.podSelector);

  let comfyuiReady = false;
  /** @type {number | null} */
  let lastDemandAt = null;
  /** @type {number | null} */
  let wakeStartedAt = null;

  let started = false;
  let closed = false;
  /** @type {Promise<void> | null} */
  let closePromise = null;
  const abort = new AbortController();
  /** @type {Set<NodeJS.Timeout>} */
  const timers = new Set();
  /** @type {Set<Promise<void>>} */
  const running = new Set();
  /** @type {Set<import('node:stream').Duplex>} */
  const upgradeSockets = new Set();

  const nowMs = () => Date.now();

  function demandActive() {
    return lastDemandAt !== null && nowMs() - lastDemandAt < windowMs;
  }

  function recordDemand() {
    const now = nowMs();
    // A new wake-up starts with the first request after an idle window, so the ETA restarts
    // only when the previous wake-up was abandoned, not with every request.
    const idle = lastDemandAt === null || now - lastDemandAt >= windowMs;
    if (!comfyuiReady && (wakeStartedAt === null || idle)) {
      wakeStartedAt = now;
      log({ level: 'info', msg: 'wake-up requested' });
    }
    lastDemandAt = now;
  }

  function wakeState() {
    if (comfyuiReady) return { ready: true, waitingSeconds: 0, etaSeconds: 0 };
    const waitedMs = wakeStartedAt === null ? 0 : Math.max(0, nowMs() - wakeStartedAt);
    return {
      ready: false,
      waitingSeconds: Math.floor(waitedMs / 1000),
      etaSeconds: Math.max(0, Math.ceil(expectedWakeSeconds - waitedMs / 1000)),
    };
  }

  function retryAfterSeconds() {
    const { etaSeconds } = wakeState();
    const fallback = Math.ceil(checkIntervalMs / 1000);
    return Math.max(1, Math.min(etaSeconds || fallback, MAX_RETRY_AFTER_SECONDS, Math.floor(windowMs / 2000)));
  }

  function apiErrorBody() {
    const retry = retryAfterSeconds();
    return {
      retry,
      body: JSON.stringify({
        error: {
          type: 'gpu_starting',
          message: `No GPU worker is running yet; one is starting. Retry after ${retry} seconds.`,
          retry_after_seconds: retry,
        },
      }),
    };
  }

  /**
   * @param {http.ServerResponse} res
   * @param {number} status
   * @param {Record<string, string | number>} headers
   * @param {string} body
   * @param {boolean} [headOnly]
   */
  function send(res, status, headers, body, headOnly) {
    const bytes = Buffer.from(body, 'utf8');
    res.writeHead(status, { 'content-length': bytes.length, 'cache-control': 'no-store', ...headers });
    res.end(headOnly ? undefined : bytes);
  }

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  function onRequest(req, res) {
    // Bodies are discarded as they arrive: nothing is buffered, whatever a client uploads.
    req.resume();
    const userAgent = String(req.headers['user-agent'] ?? '');
    const method = req.method ?? 'GET';
    const headOnly = method === 'HEAD';

    if (userAgent.startsWith('ELB-HealthChecker')) {
      // Healthy only while there is no ComfyUI pod, so the ALB prefers the GPU whenever it exists.
      if (comfyuiReady) send(res, 503, { 'content-type': 'text/plain; charset=utf-8', [WAKER_HEADER]: '1' }, 'comfyui ready\n', headOnly);
      else send(res, 200, { 'content-type': 'text/plain; charset=utf-8', [WAKER_HEADER]: '1' }, 'ok\n', headOnly);
      return;
    }
    if (userAgent.startsWith('kube-probe/')) {
      // A probe pointed at this port by mistake must neither count as demand nor flap with ComfyUI.
      send(res, 200, { 'content-type': 'text/plain; charset=utf-8' }, 'ok\n', headOnly);
      return;
    }

    const path = (req.url ?? '/').split('?')[0];
    const isRead = method === 'GET' || headOnly;
    const wantsHtml = String(req.headers.accept ?? '').toLowerCase().includes('text/html');
    // Demand is what a person or a pipeline asks for: opening the page, keeping the waiting page open,
    // or submitting work. A ComfyUI tab left open after scale-to-zero keeps reconnecting its WebSocket
    // and polling in the background; counting that would wake a GPU every idle period, all day.
    if (!isRead || wantsHtml || path === '/waker/status') recordDemand();

    if (isRead && path === '/waker/status') {
      send(res, 200, { 'content-type': 'application/json', [WAKER_HEADER]: '1' }, JSON.stringify(wakeState()), headOnly);
      return;
    }
    const retry = retryAfterSeconds();
    if (isRead && wantsHtml) {
      const page = renderPage({ ...wakeState(), expectedSeconds: expectedWakeSeconds, reloadDelaySeconds });
      send(
        res,
        503,
        {
          'content-type': 'text/html; charset=utf-8',
          'retry-after': retry,
          [WAKER_HEADER]: '1',
          'content-security-policy': PAGE_CSP,
          'x-content-type-options': 'nosniff',
          'referrer-policy': 'no-referrer',
        },
        page,
        headOnly,
      );
      return;
    }
    const api = apiErrorBody();
    send(res, 503, { 'content-type': 'application/json', 'retry-after': api.retry, [WAKER_HEADER]: '1' }, api.body, headOnly);
  }

  /**
   * WebSocket (or any other) upgrade: answered on the raw socket, since no 101 will ever come from here.
   *
   * @param {http.IncomingMessage} _req
   * @param {import('node:stream').Duplex} socket
   */
  function onUpgrade(_req, socket) {
    upgradeSockets.add(socket);
    socket.on('close', () => upgradeSockets.delete(socket));
    socket.on('error', () => socket.destroy());
    // Not demand: see onRequest (an idle tab's reconnecting WebSocket must not wake a GPU).
    const api = apiErrorBody();
    socket.end(
      [
        'HTTP/1.1 503 Service Unavailable',
        'content-type: application/json',
        `content-length: ${Buffer.byteLength(api.body)}`,
        `retry-after: ${api.retry}`,
        'cache-control: no-store',
        `${WAKER_HEADER}: 1`,
        'connection: close',
        '',
        api.body,
      ].join('\r\n'),
    );
  }

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  function onMetricsRequest(req, res) {
    req.resume();
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/demand') {
      const lastDemandSecondsAgo = lastDemandAt === null ? null : Math.floor((nowMs() - lastDemandAt) / 1000);
      send(res, 200, { 'content-type': 'application/json' }, JSON.stringify({ demand: demandActive() ? 1 : 0, lastDemandSecondsAgo }));
    } else if (req.method === 'GET' && path === '/healthz') {
      send(res, 200, { 'content-type': 'text/plain; charset=utf-8' }, 'ok\n');
    } else {
      send(res, 404, { 'content-type': 'text/plain; charset=utf-8' }, 'not found\n');
    }
  }

  /** @param {(req: http.IncomingMessage, res: http.ServerResponse) => void} handle */
  function guarded(handle) {
    return (/** @type {http.IncomingMessage} */ req, /** @type {http.ServerResponse} */ res) => {
      try {
        handle(req, res);
      } catch (err) {
        log({ level: 'error', msg: 'request failed', error: errorMessage(err) });
        if (!res.headersSent) send(res, 500, { 'content-type': 'text/plain; charset=utf-8' }, 'internal error\n');
        else res.destroy();
      }
    };
  }

  const server = http.createServer(guarded(onRequest));
  server.on('upgrade', onUpgrade);
  // Answer before the body is sent: an upload that would only be thrown away is never made.
  server.on('checkContinue', guarded(onRequest));
  // The ALB reuses idle connections for up to its idle timeout (4000 s here, for WebSockets); a
  // target that closes one first races the ALB's next request on it, which then fails with a 502.
  server.keepAliveTimeout = (options.keepAliveSeconds ?? 4005) * 1000;
  const metricsServer = http.createServer(guarded(onMetricsRequest));

  async function checkComfyui() {
    let ready = false;
    try {
      const res = await httpRequest(readinessUrl, {
        timeoutMs: checkTimeoutMs,
        signal: abort.signal,
        headers: { 'user-agent': 'comfyui-waker' },
      });
      // The header guards against a COMFYUI_URL that reaches the waker itself.
      ready = res.status === 200 && !res.headers[WAKER_HEADER];
    } catch {
      ready = false;
    }
    if (closed || ready === comfyuiReady) return;
    comfyuiReady = ready;
    if (ready) {
      const waited = wakeStartedAt === null ? null : Math.round((nowMs() - wakeStartedAt) / 1000);
      wakeStartedAt = null;
      log({ level: 'info', msg: 'comfyui ready', wakeUpSeconds: waited });
    } else {
      log({ level: 'info', msg: 'comfyui not ready' });
    }
  }

  /** @param {KubePod} pod @param {string} cost @param {string} base @param {Record<string, string>} headers */
  async function patchCost(pod, cost, base, headers) {
    const name = /** @type {string} */ (pod.metadata?.name);
    const url = `${base}/api/v1/namespaces/${encodeURIComponent(String(options.namespace))}/pods/${encodeURIComponent(name)}`;
    const res = await httpRequest(url, {
      method: 'PATCH',
      headers: { ...headers, 'content-type': 'application/merge-patch+json' },
      body: JSON.stringify({ metadata: { annotations: { [DELETION_COST_ANNOTATION]: cost } } }),
      timeoutMs: KUBE_TIMEOUT_MS,
      ca: options.kubeCa,
      signal: abort.signal,
    });
    if (res.status >= 200 && res.status < 300) {
      log({ level: 'info', msg: 'pod deletion cost set', pod: name, cost, previous: pod.metadata?.annotations?.[DELETION_COST_ANNOTATION] ?? null });
    } else {
      log({ level: 'warn', msg: 'patching pod deletion cost failed', pod: name, status: res.status });
    }
  }

  // Busy pods get a higher deletion cost, so that when the HPA scales in, the ReplicaSet removes
  // idle pods first instead of killing a running generation.
  async function syncDeletionCosts() {
    const base = String(options.kubeApiUrl).replace(/\/+$/, '');
    const token = typeof options.kubeToken === 'function' ? options.kubeToken() : options.kubeToken;
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json', 'user-agent': 'comfyui-waker' };
    if (token) headers.authorization = `Bearer ${token}`;
    const listUrl =
      `${base}/api/v1/namespaces/${encodeURIComponent(String(options.namespace))}/pods` +
      `?labelSelector=${encodeURIComponent(String(options.podSelector))}`;
    const res = await httpRequest(listUrl, {
      headers,
      timeoutMs: KUBE_TIMEOUT_MS,
      maxBytes: 16 * 1024 * 1024,
      ca: options.kubeCa,
      signal: abort.signal,
    });
    if (res.status !== 200) {
      log({ level: 'warn', msg: 'listing comfyui pods failed', status: res.status });
      return;
    }
    /** @type {{ items?: KubePod[] }} */
    const list = JSON.parse(res.body);
    const pods = (list.items ?? []).filter(isServingPod);
    await Promise.all(
      pods.map(async (pod) => {
        const name = /** @type {string} */ (pod.metadata?.name);
        const queue = await readQueueRemaining(
          podPromptUrl(/** @type {string} */ (pod.status?.podIP), name),
          POD_QUERY_TIMEOUT_MS,
          abort.signal,
        );
        if (queue === null || closed) return;
        const cost = String(Math.min(queue, MAX_DELETION_COST));
        if (pod.metadata?.annotations?.[DELETION_COST_ANNOTATION] === cost) return;
        try {
          await patchCost(pod, cost, base, headers);
        } catch (err) {
          if (!closed) log({ level: 'warn', msg: 'patching pod deletion cost failed', pod: name, error: errorMessage(err) });
        }
      }),
    );
  }

  /**
   * Runs `task` now and then `intervalMs` after each run ends, so runs never overlap.
   *
   * @param {string} name
   * @param {() => Promise<void>} task
   * @param {number} intervalMs
   * @param {boolean} runNow
   */
  function loop(name, task, intervalMs, runNow) {
    const tick = () => {
      if (closed) return;
      const run = task()
        .catch((err) => {
          if (!closed) log({ level: 'warn', msg: `${name} failed`, error: errorMessage(err) });
        })
        .finally(() => {
          running.delete(run);
          if (closed) return;
          const timer = setTimeout(() => {
            timers.delete(timer);
            tick();
          }, intervalMs);
          timers.add(timer);
        });
      running.add(run);
    };
    if (runNow) tick();
    else {
      const timer = setTimeout(() => {
        timers.delete(timer);
        tick();
      }, intervalMs);
      timers.add(timer);
    }
  }

  /** @param {http.Server} srv @param {number} listenPort */
  function listen(srv, listenPort) {
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(listenPort, options.host, () => {
        srv.off('error', reject);
        const address = srv.address();
        resolve(typeof address === 'object' && address ? address.port : listenPort);
      });
    });
  }

  /** @param {http.Server} srv */
  function closeServer(srv) {
    return new Promise((resolve) => {
      if (!srv.listening) {
        resolve(undefined);
        return;
      }
      srv.close(() => resolve(undefined));
      // Every answer here is immediate, so open keep-alive connections carry nothing worth waiting for.
      srv.closeAllConnections();
    });
  }

  async function start() {
    if (started) throw new Error('waker already started');
    if (closed) throw new Error('waker closed');
    started = true;
    const boundPort = await listen(server, port);
    const boundMetricsPort = await listen(metricsServer, metricsPort);
    // One check before reporting "started", so the first health check already tells the truth.
    await checkComfyui();
    loop('comfyui readiness check', checkComfyui, checkIntervalMs, false);
    if (costEnabled) loop('pod deletion cost sync', syncDeletionCosts, costIntervalMs, true);
    log({
      level: 'info',
      msg: 'waker listening',
      port: boundPort,
      metricsPort: boundMetricsPort,
      comfyuiReady,
      podDeletionCost: costEnabled,
    });
    return { port: boundPort, metricsPort: boundMetricsPort };
  }

  async function doClose() {
    closed = true;
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
    abort.abort();
    for (const socket of upgradeSockets) socket.destroy();
    await Promise.all([closeServer(server), closeServer(metricsServer), ...running]);
  }

  function close() {
    if (!closePromise) closePromise = doClose();
    return closePromise;
  }

  return { start, close };
}

// ---------------------------------------------------------------------------------------------
// Environment

/**
 * @param {NodeJS.ProcessEnv} env
 * @param {string} name
 * @param {number} fallback
 * @param {{ min: number, integer?: boolean, max?: number }} rule
 */
function numberFromEnv(env, name, fallback, rule) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw.trim());
  const ok =
    /^\d+(\.\d+)?$/.test(raw.trim()) &&
    value >= rule.min &&
    (rule.max === undefined || value <= rule.max) &&
    (!rule.integer || Number.isInteger(value));
  if (!ok) {
    const kind = rule.integer ? 'an integer' : 'a number';
    const range = rule.max === undefined ? `>= ${rule.min}` : `from ${rule.min} to ${rule.max}`;
    throw new ConfigError(`invalid ${name}=${JSON.stringify(raw)}: expected ${kind} ${range}`);
  }
  return value;
}

/**
 * Builds options from the environment. Throws ConfigError naming the variable on a bad value.
 * Problems with the optional pod-deletion-cost loop are returned as warnings instead, so that
 * they never take the waker (and with it the wake-up path) down.
 *
 * @param {NodeJS.ProcessEnv} env
 * @param {(path: string) => string} [readFile]
 * @returns {{ options: WakerOptions, warnings: string[] }}
 */
function optionsFromEnv(env, readFile = (path) => fs.readFileSync(path, 'utf8')) {
  const comfyuiUrl = (env.COMFYUI_URL ?? '').trim();
  if (!comfyuiUrl) throw new ConfigError('COMFYUI_URL is required (the Service that selects only ready ComfyUI pods)');
  let parsed;
  try {
    parsed = new URL(comfyuiUrl);
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
    throw new ConfigError(`invalid COMFYUI_URL=${JSON.stringify(comfyuiUrl)}: expected an http(s) URL`);
  }
  const port = { min: 0, max: 65535, integer: true };
  /** @type {WakerOptions} */
  const options = {
    comfyuiUrl,
    port: numberFromEnv(env, 'PORT', 8848, port),
    metricsPort: numberFromEnv(env, 'METRICS_PORT', 9090, port),
    demandWindowSeconds: numberFromEnv(env, 'DEMAND_WINDOW_SECONDS', 120, { min: 1 }),
    expectedWakeSeconds: numberFromEnv(env, 'EXPECTED_WAKE_SECONDS', 180, { min: 1 }),
    reloadDelaySeconds: numberFromEnv(env, 'RELOAD_DELAY_SECONDS', 15, { min: 0 }),
    checkIntervalSeconds: numberFromEnv(env, 'CHECK_INTERVAL_SECONDS', 5, { min: 0.1 }),
    costIntervalSeconds: numberFromEnv(env, 'COST_INTERVAL_SECONDS', 10, { min: 1 }),
    keepAliveSeconds: numberFromEnv(env, 'KEEP_ALIVE_SECONDS', 4005, { min: 1 }),
    comfyuiPodPort: numberFromEnv(env, 'COMFYUI_POD_PORT', 8848, { min: 1, max: 65535, integer: true }),
  };
  /** @type {string[]} */
  const warnings = [];
  const host = (env.KUBERNETES_SERVICE_HOST ?? '').trim();
  if (host) {
    const selector = (env.POD_SELECTOR ?? '').trim();
    if (!selector) {
      warnings.push('POD_SELECTOR is not set: pod deletion costs are not maintained');
      return { options, warnings };
    }
    try {
      const apiPort = (env.KUBERNETES_SERVICE_PORT ?? '443').trim() || '443';
      options.kubeApiUrl = `https://${urlHost(host)}:${apiPort}`;
      options.kubeCa = readFile(`${SA_DIR}/ca.crt`);
      options.namespace = (env.POD_NAMESPACE ?? '').trim() || readFile(`${SA_DIR}/namespace`).trim();
      options.podSelector = selector;
      readFile(`${SA_DIR}/token`);
      // Projected service-account tokens are rotated by the kubelet, so read the file every round.
      options.kubeToken = () => readFile(`${SA_DIR}/token`).trim();
    } catch (err) {
      delete options.kubeApiUrl;
      warnings.push(`service-account files unreadable (${errorMessage(err)}): pod deletion costs are not maintained`);
    }
  }
  return { options, warnings };
}

function main() {
  /** @type {WakerOptions} */
  let options;
  try {
    const config = optionsFromEnv(process.env);
    options = config.options;
    for (const warning of config.warnings) logToStdout({ level: 'warn', msg: warning });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: `waker: ${err.message}` })}\n`);
    process.exit(2);
  }
  const waker = createWaker(options);
  /** @param {NodeJS.Signals} signal */
  const stop = (signal) => {
    logToStdout({ level: 'info', msg: 'stopping', signal });
    waker.close().then(
      () => process.exit(0),
      (err) => {
        logToStdout({ level: 'error', msg: 'close failed', error: errorMessage(err) });
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  waker.start().catch((err) => {
    logToStdout({ level: 'error', msg: 'start failed', error: errorMessage(err) });
    process.exit(1);
  });
}

module.exports = { createWaker, optionsFromEnv, ConfigError };

if (require.main === module) main();
