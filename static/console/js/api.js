// REST client. Tokens live only in memory (never in storage): a reload means a new login.
// The access token is refreshed a minute before it expires (POST /auth/token-refresh, which
// rotates the refresh token) and once more on a 401; if that fails the session is over.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || (status ? `HTTP ${status}` : 'network error'));
    this.status = status;
    this.code = body?.code || (status ? `http_${status}` : 'network');
    this.fields = body?.fields;
    this.retryAfter = body?.retryAfter;
  }
  get offline() {
    return this.status === 0;
  }
}

const REQUEST_TIMEOUT_MS = 20_000;

let session = null; // {accessToken, refreshToken, expires, user}
let refreshTimer = null;
let refreshing = null;
const ended = new Set();
/** Requests sent with the session's token and not yet answered (see `logout`). */
const inFlight = new Set();

function tracked(promise) {
  inFlight.add(promise);
  promise.finally(() => inFlight.delete(promise)).catch(() => {});
  return promise;
}

export const currentUser = () => session?.user ?? null;
export const accessToken = () => session?.accessToken ?? null;
export const onSessionEnd = (fn) => ended.add(fn);

/** `body`: JSON, or with `type` a string sent as it is (a CSV upload). */
async function raw(method, path, body, token, type) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = type || 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : type ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch {
    throw new ApiError(0, null);
  }
  const text = await res.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = { message: text };
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, json);
    const ra = Number(res.headers.get('Retry-After'));
    if (ra) err.retryAfter = ra;
    throw err;
  }
  return json;
}

function adopt(tokens, user) {
  session = {
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    expires: Number(tokens.expires) || Date.now() + 15 * 60 * 1000,
    user: user ?? session?.user,
  };
  clearTimeout(refreshTimer);
  const wait = Math.max(5_000, session.expires - Date.now() - 60_000);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), wait);
}

/** `otp`: the second factor of an account with an authenticator app (after `mfa_required`). */
export async function login(email, password, otp) {
  const res = await raw('POST', '/auth/login', otp ? { email, password, otp } : { email, password });
  adopt(res, res.user);
  return res.user;
}

/** Single flight: concurrent 401s share one refresh. */
export function refresh() {
  if (!session) return Promise.reject(new ApiError(401, { code: 'unauthorized' }));
  if (!refreshing) {
    const rt = session.refreshToken;
    refreshing = raw('POST', '/auth/token-refresh', { refreshToken: rt })
      .then((t) => adopt(t))
      .catch((e) => {
        if (!e.offline) end('expired');
        throw e;
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

function end(reason) {
  if (!session) return;
  session = null;
  clearTimeout(refreshTimer);
  for (const fn of ended) fn(reason);
}

/** The session ends here at once, so no request starts with its token any more; the ones
 * already sent are answered before the server revokes it (a request that reached the server
 * after `POST /logout` would be refused with a 401). */
export async function logout() {
  const token = accessToken();
  end('logout');
  await Promise.allSettled([...inFlight]);
  if (token) await raw('POST', '/logout', undefined, token);
}

/** Revoked elsewhere (e.g. the WebSocket was closed with 4001). */
export const sessionRevoked = () => end('revoked');

// 401 codes that mean the access token itself was refused (expired, revoked key): worth one
// refresh and a retry. Other 401s (a wrong authenticator code, `invalid_otp`) are the answer,
// and retrying them would count a guess twice.
const TOKEN_REFUSED = new Set(['invalid_token', 'token_expired', 'unauthorized', 'session_revoked']);

export const api = (method, path, body, type) => tracked(call(method, path, body, type));

async function call(method, path, body, type) {
  if (!session) throw new ApiError(401, { code: 'unauthorized', message: 'not logged in' });
  try {
    return await raw(method, path, body, session.accessToken, type);
  } catch (e) {
    if (e.status !== 401 || !TOKEN_REFUSED.has(e.code) || !session) throw e;
    await refresh();
    return raw(method, path, body, session.accessToken, type);
  }
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body ?? {});
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);
/** POST a CSV text as it is (`Content-Type: text/csv`). */
export const postCsv = (path, text) => api('POST', path, text, 'text/csv');

/** GET with the bearer, as a Blob (media for <img>/<audio>/<video>, which cannot send headers). */
export const blob = (path) => tracked(fetchBlob(path));

async function fetchBlob(path) {
  if (!session) throw new ApiError(401, { code: 'unauthorized', message: 'not logged in' });
  const go = () =>
    fetch(path, { headers: { Authorization: `Bearer ${session?.accessToken}` } }).catch(() => {
      throw new ApiError(0, null);
    });
  let res = await go();
  if (res.status === 401 && session) {
    await refresh();
    res = await go();
  }
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  return res.blob();
}

/** POST /media/save (multipart `file`) with upload progress (0..1). */
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/media/save');
    xhr.setRequestHeader('Authorization', `Bearer ${session?.accessToken}`);
    xhr.responseType = 'json';
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
    xhr.onload = () =>
      xhr.status >= 200 && xhr.status < 300 ? resolve(xhr.response) : reject(new ApiError(xhr.status, xhr.response));
    xhr.onerror = () => reject(new ApiError(0, null));
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
}
