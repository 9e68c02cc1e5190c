// Node `ws` peer: plain WebSocket server on node:http, rooms as Sets, one JSON.stringify per publish.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');
const { eventObject, lastSeq, port } = require('./common');

const rooms = new Map();

function publish(conversationId, text) {
  const frame = JSON.stringify(eventObject(conversationId, text));
  const room = rooms.get(conversationId);
  if (!room) return 0;
  for (const ws of room) ws.send(frame);
  return room.size;
}

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/publish') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString());
      } catch {
        res.writeHead(400);
        return res.end();
      }
      const n = publish(body.conversationId, body.text);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ received: 1, delivered: n }));
    });
  } else if (req.url === '/healthz') {
    res.writeHead(200);
    res.end('ok');
  } else {
    res.writeHead(404);
    res.end();
  }
});

const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false, maxPayload: 64 * 1024 });
wss.on('connection', (ws) => {
  const mine = new Set();
  ws.on('message', (data) => {
    let m;
    try {
      m = JSON.parse(data.toString());
    } catch {
      return;
    }
    if (m.type === 'subscribe') {
      const id = m.conversationId;
      if (!rooms.has(id)) rooms.set(id, new Set());
      rooms.get(id).add(ws);
      mine.add(id);
      ws.send(JSON.stringify({ type: 'subscribed', conversationId: id, lastSeq: lastSeq(id) }));
    } else if (m.type === 'ping') {
      ws.send('{"type":"pong"}');
    }
  });
  ws.on('close', () => {
    for (const id of mine) rooms.get(id)?.delete(ws);
  });
});

const p = port();
server.listen(p, '127.0.0.1', () => console.log(`listening ${p}`));
process.on('SIGTERM', () => process.exit(0));
