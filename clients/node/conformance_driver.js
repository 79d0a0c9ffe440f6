'use strict';
// Drives the Node client from the conformance tests: one JSON request per line on stdin, one JSON
// answer per line on stdout, the same protocol as the Java driver (ConformanceDriver.java).

const fs = require('fs');
const readline = require('readline');
const {SlidesamClient, ServerError} = require('./slidesam');

let client = null;
let session = null;

function fieldOfView(fov) {
  const [x, y, width, height] = fov.region;
  const message = {region: {x, y, width, height}};
  if (fov.slide_id !== undefined) {
    message.image = {slide_id: fov.slide_id};
  } else {
    const data = fs.readFileSync(fov.png);
    const sha256 = require('crypto').createHash('sha256').update(data).digest('hex');
    message.image = {uploaded: {sha256, origin_x: fov.origin_x, origin_y: fov.origin_y, downsample: fov.downsample, mpp: fov.mpp || 0}};
  }
  if (fov.magnification !== undefined) message.resolution = {magnification: fov.magnification};
  else if (fov.mpp_read !== undefined) message.resolution = {mpp: fov.mpp_read};
  else if (fov.downsample_read !== undefined) message.resolution = {downsample: fov.downsample_read};
  if (fov.windows !== undefined) message.windows = `WINDOW_MODE_${fov.windows.toUpperCase()}`;
  if (fov.align_to_grid !== undefined) message.align_to_grid = fov.align_to_grid;
  return message;
}

function resultJson(result) {
  return {
    result: {
      object_id: result.object_id,
      polygons: result.polygons.map((p) => ({exterior: p.exterior.xy, holes: p.holes.map((h) => h.xy)})),
      score: result.score,
      area_px: result.area_px,
      model_id: result.model_id,
      clicks: result.clicks.map((c) => [c.x, c.y, c.positive]),
      step: result.step,
      can_undo: result.can_undo,
      can_redo: result.can_redo,
      downsample: result.downsample,
      encoder_downsample: result.resolution ? result.resolution.encoder_downsample : null,
      downsampled: result.resolution ? result.resolution.downsampled : null,
      windows: result.resolution ? result.resolution.windows : null,
    },
  };
}

async function openObject(request) {
  if (session) session.close();
  session = null;
  const strategy = request.strategy ? `PROMPT_STRATEGY_${request.strategy.toUpperCase()}` : 'PROMPT_STRATEGY_UNSPECIFIED';
  const fov = fieldOfView(request.fov);
  try {
    session = await client.openObject(fov, {model: request.model || '', strategy});
  } catch (error) {
    if (!(error instanceof ServerError) || error.code !== 'NOT_FOUND' || !request.fov.png) throw error;
    await client.upload(fs.readFileSync(request.fov.png));
    session = await client.openObject(fov, {model: request.model || '', strategy});
  }
  return resultJson(session.result);
}

/** Client-side round trips of n clicks, each followed by an (untimed) undo so the object stays the same. */
async function bench(x, y, n) {
  const ms = [];
  for (let i = 0; i < n; i++) {
    const started = process.hrtime.bigint();
    await session.click(x, y, true);
    ms.push(Number(process.hrtime.bigint() - started) / 1e6);
    await session.undo();
  }
  return {ms};
}

const handlers = {
  connect: async (r) => {
    if (client) client.close();
    client = new SlidesamClient(r.address, {token: r.token, trustCert: r.trust_cert, clientCert: r.client_cert, clientKey: r.client_key, callTimeoutMs: 120000});
    return {};
  },
  list_models: async () => ({models: await client.listModels()}),
  upload: async (r) => ({upload: await client.upload(fs.readFileSync(r.png))}),
  upload_raw: async () => ({upload: await client.upload(Buffer.from([1, 2, 3]))}),
  open: openObject,
  click: async (r) => resultJson(await session.click(r.x, r.y, r.positive)),
  clicks: async (r) => resultJson(await session.addClicks(r.clicks.map(([x, y, positive]) => ({x, y, positive})))),
  box: async (r) => resultJson(await session.box(...r.box)),
  undo: async () => resultJson(await session.undo()),
  redo: async () => resultJson(await session.redo()),
  reset: async () => resultJson(await session.reset()),
  finish: async () => resultJson(await session.finish()),
  bench: async (r) => bench(r.x, r.y, r.n),
};

async function answer(line) {
  const request = JSON.parse(line);
  try {
    const handler = handlers[request.op];
    if (!handler) throw new Error(`unknown op ${request.op}`);
    return {ok: true, ...(await handler(request))};
  } catch (error) {
    if (error instanceof ServerError) return {ok: false, code: error.code, message: error.serverMessage};
    return {ok: false, code: 'CLIENT_ERROR', message: String(error && error.stack)};
  }
}

async function main() {
  const lines = readline.createInterface({input: process.stdin, crlfDelay: Infinity});
  for await (const line of lines) {
    process.stdout.write(JSON.stringify(await answer(line)) + '\n');
  }
  if (session) session.close();
  if (client) client.close();
}

main();
