'use strict';
// Node client of the slidesam server, loaded straight from proto/ with @grpc/proto-loader.
// Mirrors the Python client's interactive semantics: one answer per step, step errors raise
// ServerError(code, message) and leave the object as it was.

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'proto', 'slidesam', 'v1', 'slidesam.proto');
const definition = protoLoader.loadSync(PROTO, {keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true});
const {Segmentation} = grpc.loadPackageDefinition(definition).slidesam.v1;
const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, number]) => [number, name]));
const MAX_MESSAGE_BYTES = 64 * 2 ** 20;

class ServerError extends Error {
  /** code: the gRPC status code's name (e.g. INVALID_ARGUMENT); message: the server's own words. */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
    this.serverMessage = message;
  }
}

const AFFINITY_METADATA = 'slidesam-affinity';

/** What a load balancer routes calls on a field of view's image by: SHA-256 of 'slide:' + slide id, or the
 * uploaded pixels' own SHA-256 (as every slidesam client computes it). */
function affinityKey(fieldOfView) {
  const image = fieldOfView.image || {};
  if (image.uploaded) return image.uploaded.sha256.toLowerCase();
  if (image.slide_id) return require('crypto').createHash('sha256').update(`slide:${image.slide_id}`).digest('hex');
  return '';
}

function fromStatus(error) {
  return new ServerError(CODE_NAMES[error.code] || 'UNKNOWN', error.details || '');
}

/** A connection to one server. options: {token, trustCert, clientCert, clientKey} (PEM file paths). */
class SlidesamClient {
  constructor(address, options = {}) {
    const tls = options.trustCert || options.clientCert;
    const read = (file) => (file ? fs.readFileSync(file) : null);
    const credentials = tls
      ? grpc.credentials.createSsl(read(options.trustCert), read(options.clientKey), read(options.clientCert))
      : grpc.credentials.createInsecure();
    this.address = address;
    this.callTimeoutMs = options.callTimeoutMs || 300000;
    this.metadata = new grpc.Metadata();
    if (options.token) this.metadata.set('authorization', `Bearer ${options.token}`);
    this.stub = new Segmentation(address, credentials, {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    });
  }

  waitReady(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      this.stub.waitForReady(Date.now() + timeoutMs, (error) =>
        error ? reject(new ServerError('UNAVAILABLE', `no slidesam server answered at ${this.address}`)) : resolve());
    });
  }

  listModels() {
    return this.unary('ListModels', {}).then((reply) => reply.models);
  }

  /** Sends encoded pixels (a Buffer); the server keeps them under their SHA-256. */
  upload(data) {
    const sha256 = require('crypto').createHash('sha256').update(data).digest('hex');
    return this.unary('UploadImage', {data, sha256}, sha256);
  }

  /** The call metadata: the token, and for a call on an image its affinity key (for a load balancer). */
  metadataFor(affinityKey) {
    if (!affinityKey) return this.metadata;
    const metadata = this.metadata.clone();
    metadata.set(AFFINITY_METADATA, affinityKey);
    return metadata;
  }

  /** Opens an object on a field of view (a proto FieldOfView object); resolves to an ObjectSession. */
  async openObject(fieldOfView, {model = '', strategy = 'PROMPT_STRATEGY_UNSPECIFIED'} = {}) {
    await this.waitReady();
    const session = new ObjectSession(this, affinityKey(fieldOfView));
    try {
      await session.send({open: {field_of_view: fieldOfView, model, strategy}});
    } catch (error) {
      session.close();
      throw error;
    }
    return session;
  }

  unary(method, request, affinity = '') {
    const deadline = Date.now() + this.callTimeoutMs;
    return new Promise((resolve, reject) => {
      this.stub[method](request, this.metadataFor(affinity), {deadline}, (error, reply) => (error ? reject(fromStatus(error)) : resolve(reply)));
    });
  }

  close() {
    this.stub.close();
  }
}

/** One Interact stream holding one object; each step resolves to the object's current result. */
class ObjectSession {
  constructor(client, affinity = '') {
    this.client = client;
    this.nextId = 1;
    this.pending = null;
    this.call = client.stub.Interact(client.metadataFor(affinity));
    this.call.on('data', (response) => this.settle((p) => p.resolve(response)));
    this.call.on('error', (error) => this.settle((p) => p.reject(fromStatus(error))));
    this.call.on('end', () => this.settle((p) => p.reject(new ServerError('UNAVAILABLE', 'the server closed the stream'))));
  }

  settle(action) {
    const pending = this.pending;
    this.pending = null;
    if (pending) action(pending);
  }

  async send(action) {
    const requestId = this.nextId++;
    const response = await new Promise((resolve, reject) => {
      this.pending = {resolve, reject};
      this.call.write({request_id: requestId, ...action});
    });
    if (response.request_id !== requestId) {
      throw new ServerError('INTERNAL', `reply ${response.request_id} does not answer request ${requestId}`);
    }
    if (response.outcome === 'error') {
      throw new ServerError(CODE_NAMES[response.error.code] || 'UNKNOWN', response.error.message);
    }
    this.result = response.result;
    return response.result;
  }

  click(x, y, positive = true) {
    return this.addClicks([{x, y, positive}]);
  }

  addClicks(clicks) {
    return this.send({clicks: {clicks}});
  }

  box(x, y, width, height) {
    return this.send({box: {box: {x, y, width, height}}});
  }

  undo() {
    return this.send({undo: {}});
  }

  redo() {
    return this.send({redo: {}});
  }

  reset() {
    return this.send({reset: {}});
  }

  async finish() {
    const result = await this.send({finish: {}});
    this.close();
    return result;
  }

  close() {
    this.call.end();
    this.call.cancel();
  }
}

module.exports = {SlidesamClient, ObjectSession, ServerError, affinityKey};
