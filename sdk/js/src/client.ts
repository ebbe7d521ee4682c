// The Courier client: one long-lived session per (account, resource), kept up with
// jittered exponential backoff; sends acknowledged by the server (retried with the
// same packetId after a reconnect: the server deduplicates); deliveries deduplicated
// by sequence and acknowledged cumulatively in batches; pulls of older pages.

import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import * as codec from "./codec.js";
import type { LoginResult, Message, SendOptions, ServerAck, ServerEvent } from "./codec.js";
import { SequenceWindow } from "./dedup.js";
import { Emitter } from "./emitter.js";

/** The part of a WebSocket this client uses (browsers' and the `ws` package's). */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketFactory = new (url: string, protocols: string | string[]) => SocketLike;

/**
 * Returns a token for this client's account. Your app implements it by asking its own
 * back end, which calls `POST /api/account/token` with the app's secret; hand back
 * that answer as is (`{code, message, data: {token, …}}`), or the token string.
 */
export type TokenFetcher = () => Promise<unknown>;

export interface ClientOptions {
  /** The gateway's WebSocket URL, e.g. `wss://chat.example.com/ws`. */
  url: string;
  tokenFetcher: TokenFetcher;
  /** This device's name; one session per (account, resource). */
  resource: string;
  /** WebSocket implementation (default: the platform's `WebSocket`; in Node 20 pass `ws`). */
  WebSocket?: SocketFactory;
  backoff?: BackoffOptions;
  /** Acks are sent this long after the first unacked delivery (default 200 ms)… */
  ackDelayMs?: number;
  /** …or at once when this many deliveries are unacked (default 100). */
  ackEvery?: number;
  /** A Ping this often while online (default 60 s; the server closes idle sessions after 180 s). */
  pingIntervalMs?: number;
  /** Sequences remembered for deduplication (default 10,000). */
  dedupCapacity?: number;
  /** Reject a send not acknowledged within this (default 60 s), even across reconnects. */
  sendTimeoutMs?: number;
}

export type ConnectionState = "idle" | "connecting" | "online" | "offline" | "closed";

export interface ClientEvents {
  /** The connection state changed (`offline`: waiting to reconnect). */
  state: [state: ConnectionState];
  /** A new message (deduplicated by sequence); `backlog` until the login's SyncDone. */
  message: [message: Message, info: { backlog: boolean }];
  /** The server's answer to one of this client's sends (also resolves its promise). */
  serverAck: [ack: ServerAck];
  /** Logged in (again): the server's LoginResult. */
  login: [result: LoginResult];
  /** The login backlog (or a resync) is complete. */
  syncDone: [count: number];
  /** More stored messages than the server sends at login: page them with `pull`. */
  pullNotice: [range: { afterSequence: number; beforeSequence: number }];
  /** The server closed the session with a reason (code 1: the same resource logged in elsewhere). */
  kick: [kick: { code: number; reason: string }];
  /** Something went wrong that no call is waiting for (an Error frame, a token refused). */
  error: [error: Error];
}

/** Kick codes after which the client does not reconnect by itself. */
const FINAL_KICKS = new Set([1 /* replaced */, 7 /* account expired or app deleted */]);

interface PendingSend {
  frame: Uint8Array;
  resolve: (ack: ServerAck) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface PendingPull {
  resolve: (page: { messages: Message[]; hasMore: boolean }) => void;
  reject: (e: Error) => void;
}

/** A refusal from the server (a ServerAck or Error with a code other than 200). */
export class CourierError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = "CourierError";
  }
}

export class CourierClient extends Emitter<ClientEvents> {
  private readonly opts: Required<Omit<ClientOptions, "WebSocket">> & { WebSocket: SocketFactory };
  private socket: SocketLike | undefined;
  private currentState: ConnectionState = "idle";
  private attempt = 0;
  private token: string | undefined;
  private refreshedToken = false;
  private inBacklog = false;
  private readonly seen: SequenceWindow;
  private readonly sends = new Map<string, PendingSend>();
  private readonly pulls: PendingPull[] = [];
  private highestSeen = 0;
  private highestAcked = 0;
  private unacked = 0;
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private firstLogin: { resolve: (r: LoginResult) => void; reject: (e: Error) => void } | undefined;
  private packetCounter = 0;
  private readonly packetPrefix = Math.random().toString(36).slice(2, 10);
  /** The account this client is logged in as (after the first login). */
  account: string | undefined;

  constructor(options: ClientOptions) {
    super();
    const WebSocketImpl =
      options.WebSocket ?? (globalThis as { WebSocket?: SocketFactory }).WebSocket;
    if (!WebSocketImpl) {
      throw new Error("no WebSocket in this platform: pass options.WebSocket (e.g. the ws package)");
    }
    this.opts = {
      backoff: DEFAULT_BACKOFF,
      ackDelayMs: 200,
      ackEvery: 100,
      pingIntervalMs: 60_000,
      dedupCapacity: 10_000,
      sendTimeoutMs: 60_000,
      ...options,
      WebSocket: WebSocketImpl,
    };
    this.seen = new SequenceWindow(this.opts.dedupCapacity);
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** Connects and logs in; resolves with the first LoginResult. Reconnects by itself after. */
  login(): Promise<LoginResult> {
    if (this.currentState !== "idle" && this.currentState !== "closed") {
      return Promise.reject(new Error(`login: already ${this.currentState}`));
    }
    return new Promise((resolve, reject) => {
      this.firstLogin = { resolve, reject };
      this.attempt = 0;
      void this.connect();
    });
  }

  /** Logs out: the server closes the session; no reconnect. Unacknowledged sends fail. */
  logout(): void {
    this.flushAck();
    if (this.socket && this.currentState === "online") this.socket.send(codec.encodeLogout());
    this.shutdown("closed", new Error("logged out"));
  }

  /** Sends a p2p message; resolves with the ServerAck once the server stored it. */
  sendMessage(toAccount: string, payload: Uint8Array | string, options: SendOptions = {}): Promise<ServerAck> {
    return this.send({ toAccount }, payload, options);
  }

  /** Sends to a topic; resolves with the ServerAck once the server stored it. */
  sendTopicMessage(topicId: number, payload: Uint8Array | string, options: SendOptions = {}): Promise<ServerAck> {
    return this.send({ topicId }, payload, options);
  }

  /**
   * Stored messages with afterSequence < sequence < beforeSequence (0: no bound),
   * oldest first, at most `limit` (the server caps it). Pulled messages are not
   * deduplicated (you asked for them).
   */
  pull(afterSequence: number, beforeSequence = 0, limit = 100): Promise<{ messages: Message[]; hasMore: boolean }> {
    if (this.currentState !== "online" || !this.socket) {
      return Promise.reject(new Error("pull: not online"));
    }
    this.socket.send(codec.encodePull(afterSequence, beforeSequence, limit));
    return new Promise((resolve, reject) => this.pulls.push({ resolve, reject }));
  }

  private send(target: { toAccount: string } | { topicId: number }, payload: Uint8Array | string, options: SendOptions): Promise<ServerAck> {
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    const packetId = `${this.packetPrefix}-${Date.now().toString(36)}-${(this.packetCounter++).toString(36)}`;
    const frame = codec.encodeSend(packetId, target, bytes, options);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.sends.delete(packetId);
        reject(new Error(`send ${packetId}: not acknowledged within ${this.opts.sendTimeoutMs} ms`));
      }, this.opts.sendTimeoutMs);
      this.sends.set(packetId, { frame, resolve, reject, timer });
      // Offline: it goes out, with the same packetId, after the next login.
      if (this.currentState === "online") this.socket?.send(frame);
    });
  }

  private setState(state: ConnectionState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.emit("state", state);
  }

  private async connect(): Promise<void> {
    this.setState("connecting");
    try {
      if (!this.token) this.token = extractToken(await this.opts.tokenFetcher());
    } catch (e) {
      this.emit("error", asError(e, "token fetcher failed"));
      this.scheduleReconnect();
      return;
    }
    let socket: SocketLike;
    try {
      socket = new this.opts.WebSocket(this.opts.url, codec.SUBPROTOCOL);
    } catch (e) {
      this.emit("error", asError(e, "cannot open the WebSocket"));
      this.scheduleReconnect();
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => socket.send(codec.encodeLogin(this.token ?? "", this.opts.resource));
    socket.onmessage = (ev) => this.onFrame(ev.data);
    socket.onerror = () => {};
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.stopTimers();
      if (this.currentState !== "closed") this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    if (this.currentState === "closed") return;
    this.setState("offline");
    const delay = backoffDelay(this.attempt++, this.opts.backoff);
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
  }

  private onFrame(data: unknown): void {
    let event: ServerEvent | undefined;
    try {
      const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : (data as Uint8Array);
      event = codec.decode(bytes);
    } catch (e) {
      this.emit("error", asError(e, "undecodable frame from the server"));
      return;
    }
    if (event) this.handle(event);
  }

  private handle(event: ServerEvent): void {
    switch (event.kind) {
      case "loginResult":
        return this.onLoginResult(event.result);
      case "messages":
        for (const m of event.messages) this.onMessage(m);
        return;
      case "syncDone":
        this.inBacklog = false;
        this.emit("syncDone", event.count);
        return;
      case "serverAck": {
        const ack = event.ack;
        const pending = this.sends.get(ack.packetId);
        if (ack.code === 200 && ack.sequence > 0) this.noteSeen(ack.sequence);
        this.emit("serverAck", ack);
        if (!pending) return;
        this.sends.delete(ack.packetId);
        clearTimeout(pending.timer);
        if (ack.code === 200) pending.resolve(ack);
        else pending.reject(new CourierError(ack.code, ack.desc));
        return;
      }
      case "pullNotice":
        this.emit("pullNotice", { afterSequence: event.afterSequence, beforeSequence: event.beforeSequence });
        return;
      case "pullResult":
        this.pulls.shift()?.resolve({ messages: event.messages, hasMore: event.hasMore });
        return;
      case "pong":
        return;
      case "kick":
        this.emit("kick", { code: event.code, reason: event.reason });
        if (FINAL_KICKS.has(event.code)) this.shutdown("closed", new CourierError(event.code, event.reason));
        return;
      case "error": {
        const pending = event.packetId ? this.sends.get(event.packetId) : undefined;
        const error = new CourierError(event.code, event.desc);
        if (pending) {
          this.sends.delete(event.packetId);
          clearTimeout(pending.timer);
          pending.reject(error);
        } else if (this.pulls.length > 0 && event.code !== 429) {
          this.pulls.shift()?.reject(error);
        } else {
          this.emit("error", error);
        }
        return;
      }
    }
  }

  private onLoginResult(result: LoginResult): void {
    if (result.code === 401 && !this.refreshedToken) {
      // Expired (or otherwise refused) token: ask for a new one once, at once.
      this.refreshedToken = true;
      this.token = undefined;
      this.attempt = 0;
      return;
    }
    if (result.code !== 200) {
      const error = new CourierError(result.code, `login refused: ${result.desc}`);
      this.emit("error", error);
      if (result.code === 401 || result.code === 400) this.shutdown("closed", error);
      return;
    }
    this.refreshedToken = false;
    this.attempt = 0;
    this.account = result.account;
    this.inBacklog = true;
    this.setState("online");
    this.emit("login", result);
    this.firstLogin?.resolve(result);
    this.firstLogin = undefined;
    // Sends not acknowledged before the last disconnect, same packetIds.
    for (const pending of this.sends.values()) this.socket?.send(pending.frame);
    this.pingTimer = setInterval(() => {
      this.socket?.send(codec.encodePing(BigInt(Date.now())));
    }, this.opts.pingIntervalMs);
  }

  private onMessage(m: Message): void {
    if (!this.seen.admit(m.sequence)) return;
    if (m.sequence > 0) this.noteSeen(m.sequence);
    this.emit("message", m, { backlog: this.inBacklog });
  }

  /** A stored sequence arrived: acknowledge it (cumulatively, batched). */
  private noteSeen(sequence: number): void {
    if (sequence > this.highestSeen) this.highestSeen = sequence;
    this.unacked++;
    if (this.unacked >= this.opts.ackEvery) {
      this.flushAck();
    } else if (!this.ackTimer) {
      this.ackTimer = setTimeout(() => this.flushAck(), this.opts.ackDelayMs);
    }
  }

  private flushAck(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    this.unacked = 0;
    if (this.highestSeen <= this.highestAcked || this.currentState !== "online") return;
    this.socket?.send(codec.encodeAck(this.highestSeen));
    this.highestAcked = this.highestSeen;
  }

  private stopTimers(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.ackTimer = undefined;
    this.pingTimer = undefined;
    this.unacked = 0;
    // Pulls in flight died with the connection.
    for (const pull of this.pulls.splice(0)) pull.reject(new Error("pull: connection lost"));
  }

  private shutdown(state: ConnectionState, reason: Error): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.stopTimers();
    this.setState(state);
    const socket = this.socket;
    this.socket = undefined;
    socket?.close(1000);
    for (const [id, pending] of this.sends) {
      clearTimeout(pending.timer);
      pending.reject(reason);
      this.sends.delete(id);
    }
    this.firstLogin?.reject(reason);
    this.firstLogin = undefined;
  }
}

/** The token in a token fetcher's answer: the token API's JSON as is, or a string. */
export function extractToken(answer: unknown): string {
  if (typeof answer === "string" && answer.length > 0) return answer;
  const a = answer as { code?: unknown; message?: unknown; data?: { token?: unknown } } | null;
  if (a && typeof a.data?.token === "string") return a.data.token;
  const why = a && typeof a.message === "string" ? `: ${a.message}` : "";
  throw new Error(`the token fetcher's answer holds no token${why}`);
}

function asError(e: unknown, context: string): Error {
  return e instanceof Error ? e : new Error(`${context}: ${String(e)}`);
}
