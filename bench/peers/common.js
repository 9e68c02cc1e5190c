// Shared by the three peers: the same minimal subscribe-and-broadcast protocol as confab's
// real-time API (CONTRACT §4) without persistence, authentication or webhooks.
//   client -> {"type":"subscribe","conversationId":N}   server -> {"type":"subscribed","conversationId":N,"lastSeq":S}
//   client -> {"type":"ping"}                            server -> {"type":"pong"}
//   POST /publish {"conversationId":N,"text":"..."}      every subscriber of N gets one event frame
// The event frame mimics confab's message.created frame (same fields, similar size).
'use strict';
const crypto = require('crypto');

const seqs = new Map();

function nextSeq(conversationId) {
  const s = (seqs.get(conversationId) || 0) + 1;
  seqs.set(conversationId, s);
  return s;
}

function lastSeq(conversationId) {
  return seqs.get(conversationId) || 0;
}

function eventObject(conversationId, text) {
  const now = new Date().toISOString();
  return {
    type: 'event',
    conversationId,
    seq: nextSeq(conversationId),
    event: 'message.created',
    data: {
      messageId: crypto.randomBytes(16).toString('hex'),
      conversationId,
      direction: 'RECEIVED',
      content: text,
      datetime: now,
      status: 'DELIVERED',
      attachments: [],
    },
  };
}

function port() {
  const p = Number(process.argv[2]);
  if (!Number.isInteger(p) || p <= 0) {
    console.error('usage: node <peer>.js <port>');
    process.exit(2);
  }
  return p;
}

module.exports = { eventObject, lastSeq, port };
