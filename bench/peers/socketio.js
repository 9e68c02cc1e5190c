// Socket.IO peer: WebSocket transport only, rooms via socket.join, broadcast with io.to(room).emit
// (Socket.IO encodes a broadcast packet once for all recipients).
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { eventObject, lastSeq, port } = require('./common');

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
      io.to(`c${body.conversationId}`).emit('event', eventObject(body.conversationId, body.text));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"received":1}');
    });
  } else if (req.url === '/healthz') {
    res.writeHead(200);
    res.end('ok');
  } else if (!req.url.startsWith('/socket.io/')) {
    res.writeHead(404);
    res.end();
  }
});

const io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false });
io.on('connection', (socket) => {
  socket.on('subscribe', (m) => {
    const id = m && m.conversationId;
    socket.join(`c${id}`);
    socket.emit('subscribed', { type: 'subscribed', conversationId: id, lastSeq: lastSeq(id) });
  });
  socket.on('ping', () => socket.emit('pong', { type: 'pong' }));
});

const p = port();
server.listen(p, '127.0.0.1', () => console.log(`listening ${p}`));
process.on('SIGTERM', () => process.exit(0));
