// The gateway compresses its JSON and text for clients that accept it (ComfyUI's --enable-compress-response-body
// stops at the gateway, and /object_info is megabytes in a real install): br/gzip/deflate with
// Vary: Accept-Encoding and the same body once decoded; never media, never a WebSocket, never a client that
// did not ask. Raw HTTP (node:http), so what travels is seen before any decoding.
import { strict as assert } from "node:assert";
import * as http from "node:http";
import * as zlib from "node:zlib";
import sharp from "sharp";
import { get, openWs, startGateway, t2i, until } from "./helpers";
import { startStandIn, type StandIn } from "./standin";

function raw(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http.get(url, { headers }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
      res.on("error", reject);
    }).on("error", reject);
  });
}

const decode: Record<string, (b: Buffer) => Buffer> = { gzip: zlib.gunzipSync, br: zlib.brotliDecompressSync, deflate: zlib.inflateSync };

describe("gateway response compression", function () {
  this.timeout(60000);
  let pod: StandIn;
  let gw: Awaited<ReturnType<typeof startGateway>>;

  before(async () => {
    pod = await startStandIn({ stepMs: 1 });
    gw = await startGateway([pod.url]);
    // /object_info comes from the discovery cache, filled once a pod is ready.
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
    await until(async () => Object.keys((await get(gw.url, "/object_info")).json ?? {}).length > 0);
  });
  after(async () => {
    await gw?.close();
    await pod?.close();
  });

  it("/object_info as br, gzip and deflate with Vary: Accept-Encoding, identical once decoded; plain without Accept-Encoding", async () => {
    const plain = await raw(gw.url + "/object_info");
    assert.equal(plain.status, 200);
    assert.equal(plain.headers["content-encoding"], undefined, "a client that does not ask gets identity");
    const sizes: string[] = [`identity ${plain.body.length}`];
    for (const [accept, expected] of [["br", "br"], ["gzip", "gzip"], ["deflate", "deflate"], ["gzip, deflate, br", "br"], ["gzip;q=1, br;q=0.5", "gzip"]]) {
      for (const p of ["/object_info", "/api/object_info"]) {
        const r = await raw(gw.url + p, { "accept-encoding": accept });
        assert.equal(r.status, 200);
        assert.equal(r.headers["content-encoding"], expected, `${p} with ${accept}`);
        assert.match(String(r.headers.vary), /accept-encoding/i, `${p} with ${accept}: Vary`);
        assert.match(String(r.headers["content-type"]), /^application\/json/);
        const body = decode[expected](r.body);
        assert.ok(body.equals(plain.body), `${p} with ${accept}: the same bytes once decoded`);
        assert.ok(r.body.length < plain.body.length / 3, `${p} ${expected}: ${r.body.length} of ${plain.body.length} bytes`);
        if (p === "/object_info" && accept === expected) sizes.push(`${expected} ${r.body.length}`);
      }
    }
    console.log(`      /object_info bytes (stand-in's node set): ${sizes.join(", ")}`);
    const identity = await raw(gw.url + "/object_info", { "accept-encoding": "identity" });
    assert.equal(identity.headers["content-encoding"], undefined);
    assert.ok(identity.body.equals(plain.body));
  });

  it("streamed JSON (/history) is compressed too; small answers and media are not", async () => {
    const sub = await (await fetch(gw.url + "/prompt", { method: "POST", body: JSON.stringify({ prompt: t2i(21) }) })).json() as { prompt_id: string };
    await until(async () => (await get(gw.url, `/history/${sub.prompt_id}`)).json[sub.prompt_id]);
    const plain = await raw(gw.url + "/history");
    const gz = await raw(gw.url + "/history", { "accept-encoding": "gzip" });
    assert.equal(gz.headers["content-encoding"], "gzip");
    assert.ok(zlib.gunzipSync(gz.body).equals(plain.body));
    // Under the 1 KiB threshold the encoding would cost more than it saves.
    const small = await raw(gw.url + "/prompt", { "accept-encoding": "gzip" });
    assert.equal(small.headers["content-encoding"], undefined);
    assert.deepEqual(JSON.parse(small.body.toString()), JSON.parse((await raw(gw.url + "/prompt")).body.toString()));
    // An image is compressed already: served as it is, byte for byte, whatever the client accepts.
    const h = (await get(gw.url, `/history/${sub.prompt_id}`)).json[sub.prompt_id] as { outputs: Record<string, { images: { filename: string; subfolder: string }[] }> };
    const img = h.outputs["9"].images[0];
    const url = `${gw.url}/view?type=output&filename=${encodeURIComponent(img.filename)}&subfolder=${encodeURIComponent(img.subfolder)}`;
    const png = await raw(url, { "accept-encoding": "gzip, deflate, br" });
    assert.equal(png.headers["content-encoding"], undefined);
    assert.equal(png.headers["content-type"], "image/png");
    assert.equal(Number(png.headers["content-length"]), png.body.length);
    assert.ok(png.body.equals((await raw(url)).body));
    const webp = await raw(url + "&preview=webp;90", { "accept-encoding": "gzip" });
    assert.equal(webp.headers["content-encoding"], undefined);
    assert.equal((await sharp(webp.body).metadata()).format, "webp");
  });

  it("a WebSocket opened with Accept-Encoding works as ever (an upgrade has no body to encode)", async () => {
    const ws = await openWs(gw.url, "compress-ws");
    try {
      await until(async () => ws.messages.find((m) => m.type === "status"));
    } finally {
      await ws.close();
    }
    const upgraded = await new Promise<number>((resolve, reject) => {
      const req = http.get(gw.url + "/ws?clientId=raw-ws", {
        headers: { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "accept-encoding": "gzip, br" },
      });
      req.on("upgrade", (res, socket) => {
        assert.equal(res.headers["content-encoding"], undefined);
        socket.destroy();
        resolve(res.statusCode!);
      });
      req.on("response", (res) => resolve(res.statusCode!));
      req.on("error", reject);
    });
    assert.equal(upgraded, 101);
  });
});
