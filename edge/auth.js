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

// kvs.get() rejects when a key is missing (e.g. while a new store's keys are still propagating to
// the edge): that must read as "no credentials", never as an uncaught error. Pattern from AWS's
// aws-samples/amazon-cloudfront-functions kvs-jwt-verify/verify-jwt.js (getSecret).
async function secret(key) {
  try {
    const v = await kvs.get(key);
    return typeof v === 'string' && v.length > 0 ? v : null;
  } catch (err) {
    // Function logs carry the key name and the runtime's message, never a value.
    console.log('kvs ' + key + ': ' + err);
    return null;
  }
}

// cloudfront-js-2.0's crypto has createHash/createHmac only (no timingSafeEqual): compare every
// character whatever the first mismatch, as AWS's kvs-jwt-verify sample (_constantTimeEquals) does.
function constantTimeEquals(a, b) {
  if (typeof a !== 'string' || typeof b !== 'string' || a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

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
  const key = await secret('session-key');
  if (key === null) return false;
  return constantTimeEquals(sign(parts[0], key), parts[1]);
}

async function validBasic(request) {
  const h = request.headers.authorization;
  if (!h || h.value.indexOf('Basic ') !== 0) return false;
  const expected = await secret('basic-sha256');
  if (expected === null) return false;
  const digest = crypto.createHash('sha256').update(h.value.slice(6).trim()).digest('hex');
  return constantTimeEquals(digest, expected);
}

// 401 (not 503) while the store is incomplete: it fails closed, says nothing about the store's
// state to an unauthenticated caller, and no-store keeps browsers and CloudFront from keeping it.
function denied() {
  return {
    statusCode: 401,
    statusDescription: 'Unauthorized',
    headers: {
      'www-authenticate': { value: 'Basic realm="ComfyUI", charset="UTF-8"' },
      'cache-control': { value: 'no-store' },
    },
  };
}

async function viewerRequest(event) {
  const request = event.request;
  try {
    if ((await validSession(request)) || (await validBasic(request))) return request;
  } catch (err) {
    // Anything unexpected (malformed headers, runtime errors) denies access rather than erroring.
    console.log('auth: ' + err);
  }
  return denied();
}

async function viewerResponse(event) {
  const response = event.response;
  // Only requests that passed viewerRequest reach here; one that came with Basic gets a session.
  if (event.request.headers.authorization) {
    const key = await secret('session-key');
    // No key at the edge yet: answer without a cookie; the client still holds Basic for the next request.
    if (key !== null) {
      const expires = Math.floor(Date.now() / 1000) + SESSION_SECONDS;
      const value = expires + '.' + sign(String(expires), key);
      response.cookies[COOKIE] = { value: value, attributes: 'Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=' + SESSION_SECONDS };
    }
  }
  return response;
}

async function handler(event) {
  return event.context.eventType === 'viewer-response' ? viewerResponse(event) : viewerRequest(event);
}
