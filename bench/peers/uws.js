// uWebSockets.js peer (npm @trufflesuite/uws-js-unofficial): native pub/sub topics per room,
// app.publish sends one pre-built frame to every subscriber.
'use strict';
const uWS = require('@trufflesuite/uws-js-unofficial');
const { eventObject, lastSeq, port } = require('./common');

const app = uWS.App();
app.ws('/ws', {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  maxBackpressure: 4 * 1024 * 1024,
  idleTimeout: 120,
  message: (ws, message) => {
    let m;
    try {
      m = JSON.parse(Buffer.from(message).toString());
    } catch {
      return;
    }
    if (m.type === 'subscribe') {
      ws.subscribe(`c${m.conversationId}`);
      ws.send(JSON.stringify({ type: 'subscribed', conversationId: m.conversationId, lastSeq: lastSeq(m.conversationId) }));
    } else if (m.type === 'ping') {
      ws.send('{"type":"pong"}');
    }
  },
});
app.post('/publish', (res) => {
  const chunks = [];
  res.onAborted(() => {
    res.aborted = true;
  });
  res.onData((chunk, isLast) => {
    chunks.push(Buffer.from(chunk)); // the ArrayBuffer is only valid during this call
    if (!isLast) return;
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString());
    } catch {
      if (!res.aborted) res.writeStatus('400 Bad Request').end();
      return;
    }
    const frame = JSON.stringify(eventObject(body.conversationId, body.text));
    app.publish(`c${body.conversationId}`, frame, false);
    if (!res.aborted) res.cork(() => res.writeHeader('content-type', 'application/json').end('{"received":1}'));
  });
});
app.get('/healthz', (res) => res.end('ok'));

const p = port();
app.listen('127.0.0.1', p, (token) => {
  if (!token) {
    console.error(`cannot listen on ${p}`);
    process.exit(1);
  }
  console.log(`listening ${p}`);
});
process.on('SIGTERM', () => process.exit(0));
