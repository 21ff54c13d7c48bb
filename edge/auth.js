// @ts-nocheck -- runs in the CloudFront Functions runtime (cloudfront-js-2.0), not Node.js; test/edge executes it.
// CloudFront Functions (cloudfront-js-2.0) code: nobody reaches ComfyUI without the studio's
// credentials. Browsers log in once with HTTP Basic and then carry a signed, HttpOnly session
// cookie (which their WebSocket handshakes also send); API clients send Basic on every request.
// Secrets live in the associated KeyValueStore, never in this code: "basic-sha256" is the SHA-256
// of the base64 "user:password", "session-key" signs the cookie.
import cf from 'cloudfront';
import crypto from 'crypto';

const kvs = cf.kvs('__KVS_ID__');
const COOKIE = 'comfyui_session';
const SESSION_SECONDS = 12 * 3600;

function sign(expires, key) {
  return crypto.createHmac('sha256', key).update(String(expires)).digest('hex');
}

async function validSession(request) {
  const c = request.cookies[COOKIE];
  if (!c || !c.value) return false;
  const parts = c.value.split('.');
  if (parts.length !== 2) return false;
  const expires = Number(parts[0]);
  if (!(expires > Date.now() / 1000)) return false;
  return sign(parts[0], await kvs.get('session-key')) === parts[1];
}

async function validBasic(request) {
  const h = request.headers.authorization;
  if (!h || h.value.indexOf('Basic ') !== 0) return false;
  const digest = crypto.createHash('sha256').update(h.value.slice(6).trim()).digest('hex');
  return digest === (await kvs.get('basic-sha256'));
}

async function viewerRequest(event) {
  const request = event.request;
  if ((await validSession(request)) || (await validBasic(request))) return request;
  return {
    statusCode: 401,
    statusDescription: 'Unauthorized',
    headers: {
      'www-authenticate': { value: 'Basic realm="ComfyUI", charset="UTF-8"' },
      'cache-control': { value: 'no-store' },
    },
  };
}

async function viewerResponse(event) {
  const response = event.response;
  // Only requests that passed viewerRequest reach here; one that came with Basic gets a session.
  if (event.request.headers.authorization) {
    const expires = Math.floor(Date.now() / 1000) + SESSION_SECONDS;
    const value = expires + '.' + sign(String(expires), await kvs.get('session-key'));
    response.cookies[COOKIE] = { value: value, attributes: 'Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=' + SESSION_SECONDS };
  }
  return response;
}

async function handler(event) {
  return event.context.eventType === 'viewer-response' ? viewerResponse(event) : viewerRequest(event);
}
