// The mask editor's /upload/mask and /view's channel= and preview= through the gateway, judged on pixels
// against what Pillow makes of the same inputs with the operations of ComfyUI's server.py (upload_mask,
// view_image; v0.3.64 @a125cd84, the same in the v0.38-era copies read). The references were made by
// test/gateway/pillow/generate.py (Pillow 12.3.0); PNG results must match pixel for pixel and chunk for
// chunk, lossy previews must have the same format, size and alpha and stay as close to Pillow's as two
// encoders at one quality do. Also: ComfyUI's naming rules for the composite, the content-safety headers
// of /view, and per-user scope of the original and of a derived view.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { inflateSync } from "node:zlib";
import { PNG } from "pngjs";
import sharp from "sharp";
import { mintKey } from "../../workload/gateway/auth/keys";
import { MemoryAuthStore } from "../../workload/gateway/auth/stores";
import { get, startGateway, t2i, tmpDir, until } from "./helpers";
import { startStandIn, type StandIn } from "./standin";

const DIR = path.join(__dirname, "pillow");
const cases = JSON.parse(fs.readFileSync(path.join(DIR, "cases.json"), "utf8")) as {
  pillow: string;
  masks: { original: string; mask: string; expected: string }[];
  views: { file: string; query: Record<string, string>; contentType: string | null; expected: string | null }[];
};
const file = (n: string) => fs.readFileSync(path.join(DIR, n));

/** 8-bit RGBA pixels and the PNG colour type, decoded by pngjs (not by the library under test). */
function png(buf: Buffer): { width: number; height: number; rgba: Buffer; colorType: number } {
  const p = PNG.sync.read(buf);
  return { width: p.width, height: p.height, rgba: p.data, colorType: buf[25] };
}

/** tEXt/zTXt/iTXt chunks as [type, key, text], read independently of the gateway's own reader. */
function texts(buf: Buffer): string[][] {
  const out: string[][] = [];
  for (let at = 8; at < buf.length; ) {
    const len = buf.readUInt32BE(at);
    const type = buf.toString("latin1", at + 4, at + 8);
    const d = buf.subarray(at + 8, at + 8 + len);
    const z = d.indexOf(0);
    if (type === "tEXt") out.push([type, d.toString("latin1", 0, z), d.toString("latin1", z + 1)]);
    if (type === "zTXt") out.push([type, d.toString("latin1", 0, z), inflateSync(d.subarray(z + 2)).toString("latin1")]);
    if (type === "iTXt") {
      const rest = d.subarray(z + 3);
      const afterLang = rest.indexOf(0) + 1;
      const afterTkey = rest.indexOf(0, afterLang) + 1;
      out.push([type, d.toString("latin1", 0, z), rest.toString("utf8", afterTkey)]);
    }
    at += 12 + len;
  }
  return out.sort((a, b) => a[1].localeCompare(b[1]));
}

async function raw(buf: Buffer) {
  const meta = await sharp(buf).metadata();
  const { data, info } = await sharp(buf).ensureAlpha(1).raw().toBuffer({ resolveWithObject: true });
  return { format: meta.format, hasAlpha: meta.hasAlpha, width: info.width, height: info.height, rgba: data };
}

async function upload(base: string, route: "/upload/image" | "/upload/mask", name: string, body: Buffer, fields: Record<string, string> = {}, headers: Record<string, string> = {}) {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  form.append("image", new Blob([new Uint8Array(body)]), name);
  const r = await fetch(base + route, { method: "POST", body: form, headers });
  const text = await r.text();
  return { status: r.status, text, json: r.status === 200 ? (JSON.parse(text) as { name: string; subfolder: string; type: string }) : undefined };
}

describe(`gateway image operations as ComfyUI's (references by Pillow ${cases.pillow})`, function () {
  this.timeout(60000);
  let pod: StandIn;
  let gw: Awaited<ReturnType<typeof startGateway>>;

  before(async () => {
    pod = await startStandIn({ stepMs: 1 });
    gw = await startGateway([pod.url]);
    // Every input under its own name in the input store, as the mask editor's clipspace uploads are.
    for (const n of new Set([...cases.masks.flatMap((c) => [c.original, c.mask]), ...cases.views.map((c) => c.file)])) {
      const r = await upload(gw.url, "/upload/image", n, file(n), { subfolder: "pillow" });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json!.name, n);
    }
  });
  after(async () => {
    await gw?.close();
    await pod?.close();
  });

  it("/upload/mask: the original's pixels with the mask's alpha, its text chunks kept, pixel for pixel as Pillow", async () => {
    for (const [i, c] of cases.masks.entries()) {
      const name = `clipspace-mask-${i}.png`;
      const r = await upload(gw.url, "/upload/mask", name, file(c.mask), { subfolder: "clipspace", original_ref: JSON.stringify({ filename: c.original, subfolder: "pillow", type: "input" }) });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json, { name, subfolder: "clipspace", type: "input" });
      const stored = await get(gw.url, `/view?type=input&subfolder=clipspace&filename=${name}`);
      assert.equal(stored.status, 200);
      const ours = png(stored.buf);
      const pillow = png(file(c.expected));
      assert.equal(ours.colorType, 6, `${c.original} + ${c.mask}: RGBA`);
      assert.equal(pillow.colorType, 6);
      assert.deepEqual([ours.width, ours.height], [pillow.width, pillow.height]);
      assert.ok(ours.rgba.equals(pillow.rgba), `${c.original} + ${c.mask}: pixels differ from Pillow's`);
      assert.deepEqual(texts(stored.buf), texts(file(c.expected)), `${c.original}: text chunks`);
    }
    // The workflow JSON (not Latin-1) stays iTXt, the prompt tEXt, a zTXt comes back as tEXt (Pillow's add_text).
    const withText = await get(gw.url, "/view?type=input&subfolder=clipspace&filename=clipspace-mask-0.png");
    assert.deepEqual(texts(withText.buf).map(([t, k]) => `${t} ${k}`), ["tEXt comment", "tEXt prompt", "iTXt workflow"]);
    assert.equal(texts(withText.buf)[2][2], '{"title": "猫 workflow"}');
  });

  it("/upload/mask keeps ComfyUI's naming: a taken name gets ' (1)', identical bytes reuse the name unwritten, overwrite replaces", async () => {
    const ref = JSON.stringify({ filename: "in-rgba.png", subfolder: "pillow", type: "input" });
    const first = await upload(gw.url, "/upload/mask", "m.png", file("mask-rgba.png"), { subfolder: "naming", original_ref: ref });
    assert.equal(first.json!.name, "m.png");
    // What is stored is the composite, not the upload: the same mask again is not a duplicate (server.py compares the stored bytes with the upload's).
    const again = await upload(gw.url, "/upload/mask", "m.png", file("mask-rgba.png"), { subfolder: "naming", original_ref: ref });
    assert.equal(again.json!.name, "m (1).png");
    // A stored file equal to the uploaded bytes is reused as it is: nothing composited, nothing written.
    await upload(gw.url, "/upload/image", "same.png", file("mask-la.png"), { subfolder: "naming" });
    const dup = await upload(gw.url, "/upload/mask", "same.png", file("mask-la.png"), { subfolder: "naming", original_ref: ref });
    assert.equal(dup.json!.name, "same.png");
    assert.ok((await get(gw.url, "/view?type=input&subfolder=naming&filename=same.png")).buf.equals(file("mask-la.png")));
    // overwrite=true: the name as given, the new composite in place.
    const over = await upload(gw.url, "/upload/mask", "m.png", file("mask-l.png"), { subfolder: "naming", overwrite: "true", original_ref: ref });
    assert.equal(over.json!.name, "m.png");
    const now = png((await get(gw.url, "/view?type=input&subfolder=naming&filename=m.png")).buf);
    assert.ok(now.rgba.equals(png(file("out-mask-rgba-mask_l.png")).rgba));
  });

  it("/upload/mask refuses what ComfyUI cannot composite, with the status its checks name", async () => {
    const up = (fields: Record<string, string>, name = "bad.png", body = file("mask-rgba.png")) => upload(gw.url, "/upload/mask", name, body, { subfolder: "bad", ...fields });
    assert.equal((await up({ original_ref: JSON.stringify({ filename: "nope.png", type: "input" }) })).status, 404, "no such original");
    assert.equal((await up({ original_ref: "{not json" })).status, 400);
    assert.equal((await up({})).status, 400, "no original_ref");
    assert.equal((await up({ original_ref: JSON.stringify({ filename: "../in-rgba.png", subfolder: "pillow", type: "input" }) })).status, 400);
    assert.equal((await up({ original_ref: JSON.stringify({ filename: "in-rgba.png", subfolder: "../..", type: "input" }) })).status, 403);
    assert.equal((await up({ original_ref: JSON.stringify({ filename: "in-rgba.png", subfolder: "pillow", type: "models" }) })).status, 400);
    const ref = JSON.stringify({ filename: "in-rgba.png", subfolder: "pillow", type: "input" });
    assert.equal((await up({ original_ref: ref }, "bad.webp")).status, 400, "the composite is a PNG");
    const small = await sharp({ create: { width: 2, height: 2, channels: 4, background: "#000" } }).png().toBuffer();
    const wrong = await up({ original_ref: ref }, "bad.png", small);
    assert.equal(wrong.status, 400, "Pillow's putalpha refuses a mask of another size");
    assert.match(wrong.text, /sizes must match/);
    // The " [input]" annotation on the name wins over the type, as in ComfyUI.
    assert.equal((await up({ original_ref: JSON.stringify({ filename: "in-rgba.png [input]", subfolder: "pillow", type: "output" }) }, "ok.png")).status, 200);
  });

  it("/view channel= and preview=: Pillow's PNGs pixel for pixel, its WebP/JPEG previews in format, size and alpha", async () => {
    let worst = 0;
    for (const c of cases.views) {
      const qs = new URLSearchParams({ type: "input", subfolder: "pillow", filename: c.file, ...c.query });
      const label = `${c.file} ${JSON.stringify(c.query)}`;
      const res = await fetch(`${gw.url}/view?${qs}`);
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(res.status, 200, label);
      assert.equal(res.headers.get("x-content-type-options"), "nosniff", label);
      assert.match(res.headers.get("content-security-policy") ?? "", /sandbox/, label);
      if (c.contentType === null) {
        assert.ok(body.equals(file(c.file)), `${label}: the file as stored`);
        continue;
      }
      assert.equal(res.headers.get("content-type"), c.contentType, label);
      assert.equal(res.headers.get("content-disposition"), `inline; filename="${c.file}"`, label);
      const expected = file(c.expected!);
      if (c.contentType === "image/png") {
        const ours = png(body);
        const pillow = png(expected);
        assert.equal(ours.colorType, pillow.colorType, `${label}: PNG colour type`);
        assert.ok(ours.rgba.equals(pillow.rgba), `${label}: pixels differ from Pillow's`);
        continue;
      }
      const ours = await raw(body);
      const pillow = await raw(expected);
      assert.equal(ours.format, pillow.format, label);
      assert.deepEqual([ours.width, ours.height, ours.hasAlpha], [pillow.width, pillow.height, pillow.hasAlpha], `${label}: size and alpha`);
      for (let i = 0; i < ours.rgba.length; i++) {
        const d = Math.abs(ours.rgba[i] - pillow.rgba[i]);
        // Alpha is kept losslessly by both WebP writers (alpha quality 100): equal.
        if (i % 4 === 3) assert.equal(d, 0, `${label}: alpha at ${i >> 2}`);
        else worst = Math.max(worst, d);
      }
    }
    // Same codecs (libwebp, libjpeg-turbo) at the same settings: measured equal with sharp 0.35.6 and
    // Pillow 12.3.0; a few levels of slack for a codec version that rounds differently, no more.
    assert.ok(worst <= 8, `a lossy preview strays ${worst} levels from Pillow's`);
  });

  it("/view quality and content safety: the quality asked for is used; a file that is no image is refused, never served as one", async () => {
    const q = async (preview: string) => (await get(gw.url, `/view?type=input&subfolder=pillow&filename=in.jpg&preview=${encodeURIComponent(preview)}`)).buf.length;
    assert.ok((await q("jpeg;5")) < (await q("jpeg;100")), "quality from the last ';' part");
    assert.equal(await q("jpeg;x"), await q("jpeg;90"), "not digits: quality 90");
    const fake = Buffer.from("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>");
    await upload(gw.url, "/upload/image", "fake.png", fake, { subfolder: "pillow" });
    for (const extra of ["&channel=a", "&channel=rgb", "&preview=webp"]) {
      const r = await fetch(`${gw.url}/view?type=input&subfolder=pillow&filename=fake.png${extra}`);
      assert.equal(r.status, 400, extra);
      assert.match(r.headers.get("content-type") ?? "", /json/);
    }
    const plain = await fetch(`${gw.url}/view?type=input&subfolder=pillow&filename=fake.png&channel=rgba`);
    assert.equal(plain.headers.get("x-content-type-options"), "nosniff", "served raw (as ComfyUI does for channel=rgba), never sniffed");
    assert.match(plain.headers.get("content-security-policy") ?? "", /sandbox/);
  });
});

describe("gateway image operations keep each user's outputs their own", function () {
  this.timeout(60000);
  let pod: StandIn;
  let gw: Awaited<ReturnType<typeof startGateway>>;
  const auth = new MemoryAuthStore();
  const key = async (owner: string, admin = false) => {
    const { token, record } = mintKey({ owner, name: owner, scopes: ["submit", "read"], days: 1, admin });
    await auth.putKey(record);
    return { authorization: `Bearer ${token}` };
  };

  before(async () => {
    pod = await startStandIn({ stepMs: 1 });
    gw = await startGateway([pod.url], ["--auth", "keys"], tmpDir(), { auth });
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
  });
  after(async () => {
    await gw?.close();
    await pod?.close();
  });

  it("another artist's output is missing to /view?channel= and as a mask's original; its owner and admins reach it", async () => {
    const [alice, bob, root] = [await key("alice"), await key("bob"), await key("root", true)];
    const sub = await (await fetch(gw.url + "/prompt", { method: "POST", body: JSON.stringify({ prompt: t2i(11) }), headers: alice })).json() as { prompt_id: string };
    const entry = await until(async () => {
      const h = await (await fetch(gw.url + `/history/${sub.prompt_id}`, { headers: alice })).json() as Record<string, { outputs: Record<string, { images: { filename: string; subfolder: string }[] }> }>;
      return h[sub.prompt_id];
    });
    const img = entry.outputs["9"].images[0];
    const view = (h: Record<string, string>, extra: string) => fetch(`${gw.url}/view?type=output&filename=${encodeURIComponent(img.filename)}&subfolder=${encodeURIComponent(img.subfolder)}${extra}`, { headers: h });
    for (const extra of ["&channel=a", "&channel=rgb", "&preview=webp;50"]) {
      assert.equal((await view(alice, extra)).status, 200, extra);
      assert.equal((await view(root, extra)).status, 200, extra);
      assert.equal((await view(bob, extra)).status, 404, `bob ${extra}`);
    }
    const a = png(Buffer.from(await (await view(alice, "&channel=a")).arrayBuffer()));
    const full = await sharp(Buffer.from(await (await view(alice, "")).arrayBuffer())).metadata();
    assert.deepEqual([a.width, a.height], [full.width, full.height]);
    const ref = JSON.stringify({ filename: img.filename, subfolder: img.subfolder, type: "output" });
    const mask = await sharp({ create: { width: full.width!, height: full.height!, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0.5 } } }).png().toBuffer();
    assert.equal((await upload(gw.url, "/upload/mask", "bob-mask.png", mask, { original_ref: ref }, bob)).status, 404);
    const mine = await upload(gw.url, "/upload/mask", "alice-mask.png", mask, { original_ref: ref }, alice);
    assert.equal(mine.status, 200, mine.text);
    const stored = png(Buffer.from(await (await fetch(`${gw.url}/view?type=input&filename=alice-mask.png`, { headers: alice })).arrayBuffer()));
    assert.ok([...stored.rgba].every((v, i) => i % 4 !== 3 || v === 128), "the mask's alpha (128) on every pixel");
  });
});
