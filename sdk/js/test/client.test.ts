// Unit tests of CourierClient against a fake socket: login and token refresh,
// reconnect with backoff and the retry of unacknowledged sends with the same packetId,
// deduplication by sequence, batched acks, pulls.

import { strict as assert } from "node:assert";
import { beforeEach, test } from "node:test";

import { backoffDelay, CourierClient, extractToken, SequenceWindow } from "../src/index.js";
import type { Message } from "../src/index.js";
import { FakeSocket } from "./fake-socket.js";

const deliver = (sequence: number, text = "hi") => ({
  $typeName: "courier.v1.Deliver" as const,
  sequence: BigInt(sequence),
  timestamp: 1n,
  packetId: `p${sequence}`,
  fromUuid: 2n,
  fromAccount: "bob",
  fromResource: "phone",
  toAccount: "alice",
  topicId: 0n,
  payload: new TextEncoder().encode(text),
  bizType: "",
  transient: false,
});

let tokens: string[];

function client(extra: Partial<ConstructorParameters<typeof CourierClient>[0]> = {}): CourierClient {
  let n = 0;
  return new CourierClient({
    url: "ws://test/ws",
    resource: "web",
    tokenFetcher: async () => ({ code: 200, message: "success", data: { token: tokens[n++] ?? "t-last" } }),
    WebSocket: FakeSocket,
    backoff: { minMs: 1, maxMs: 4 },
    ackDelayMs: 5,
    ...extra,
  });
}

beforeEach(() => {
  FakeSocket.opened = [];
  tokens = ["t1", "t2", "t3"];
});

test("logs in with the fetched token and the courier.v1 subprotocol", async () => {
  const c = client();
  const states: string[] = [];
  c.on("state", (s) => states.push(s));
  const done = c.login();
  const socket = await FakeSocket.nth(1);
  const login = await socket.acceptLogin();
  const result = await done;
  assert.equal(result.account, "alice");
  assert.equal(socket.protocols, "courier.v1");
  assert.deepEqual(login.kind.case === "login" && [login.kind.value.token, login.kind.value.resource], ["t1", "web"]);
  assert.deepEqual(states, ["connecting", "online"]);
  c.logout();
  assert.equal(c.state, "closed");
});

test("an expired token is fetched again and the login retried", async () => {
  const c = client();
  const done = c.login();
  const first = await FakeSocket.nth(1);
  await first.next("login");
  first.deliver({
    case: "loginResult",
    value: { $typeName: "courier.v1.LoginResult", code: 401, desc: "token expired", appId: 0n, uuid: 0n, account: "", cursor: 0n, serverTime: 0n, protocolVersion: 1 },
  });
  first.drop();
  const second = await FakeSocket.nth(2);
  const login = await second.acceptLogin();
  assert.equal(login.kind.case === "login" && login.kind.value.token, "t2");
  await done;
  c.logout();
});

test("a send not acknowledged before a disconnect is sent again with the same packetId", async () => {
  const c = client();
  const done = c.login();
  const first = await FakeSocket.nth(1);
  await first.acceptLogin();
  await done;
  const acks: number[] = [];
  c.on("serverAck", (a) => acks.push(a.sequence));
  const sent = c.sendMessage("bob", "hello");
  const original = await first.next("send");
  assert.equal(original.kind.case, "send");
  first.drop();
  const second = await FakeSocket.nth(2);
  await second.acceptLogin();
  const retry = await second.next("send");
  const id = (f: typeof retry) => (f.kind.case === "send" ? f.kind.value.packetId : "");
  assert.equal(id(retry), id(original));
  second.deliver({
    case: "serverAck",
    value: { $typeName: "courier.v1.ServerAck", packetId: id(retry), sequence: 42n, timestamp: 1n, code: 200, desc: "ok", delivered: true },
  });
  const ack = await sent;
  assert.equal(ack.sequence, 42);
  assert.deepEqual(acks, [42], "the serverAck event too");
  c.logout();
});

test("deliveries are deduplicated by sequence and acknowledged in one batch", async () => {
  const c = client();
  const got: [Message, boolean][] = [];
  c.on("message", (m, info) => got.push([m, info.backlog]));
  const done = c.login();
  const socket = await FakeSocket.nth(1);
  await socket.acceptLogin();
  await done;
  socket.deliver({ case: "deliverBatch", value: { $typeName: "courier.v1.DeliverBatch", messages: [deliver(5), deliver(6)] } });
  socket.deliver({ case: "syncDone", value: { $typeName: "courier.v1.SyncDone", count: 2n } });
  socket.deliver({ case: "deliver", value: deliver(6) });
  socket.deliver({ case: "deliver", value: deliver(9, "live") });
  assert.deepEqual(got.map(([m, b]) => [m.sequence, b]), [[5, true], [6, true], [9, false]]);
  assert.equal(new TextDecoder().decode(got[2][0].payload), "live");
  const from = socket.sent.length;
  const ack = await socket.next("ack", from);
  assert.equal(ack.kind.case === "ack" && ack.kind.value.sequence, 9n);
  assert.equal(socket.sent.filter((f) => f.kind.case === "ack").length, 1, "one cumulative ack");
  c.logout();
});

test("a pull asks for a range and resolves with its page", async () => {
  const c = client();
  const done = c.login();
  const socket = await FakeSocket.nth(1);
  await socket.acceptLogin();
  await done;
  const page = c.pull(10, 100, 2);
  const pull = await socket.next("pull");
  assert.deepEqual(pull.kind.case === "pull" && [pull.kind.value.afterSequence, pull.kind.value.beforeSequence, pull.kind.value.limit], [10n, 100n, 2]);
  socket.deliver({ case: "pullResult", value: { $typeName: "courier.v1.PullResult", messages: [deliver(11), deliver(12)], hasMore: true } });
  const result = await page;
  assert.deepEqual(result.messages.map((m) => m.sequence), [11, 12]);
  assert.equal(result.hasMore, true);
  c.logout();
});

test("a kick for the same resource elsewhere ends the client without reconnecting", async () => {
  const c = client();
  const done = c.login();
  const socket = await FakeSocket.nth(1);
  await socket.acceptLogin();
  await done;
  const kicks: number[] = [];
  c.on("kick", (k) => kicks.push(k.code));
  socket.deliver({ case: "kick", value: { $typeName: "courier.v1.Kick", code: 1, reason: "replaced" } });
  assert.deepEqual(kicks, [1]);
  assert.equal(c.state, "closed");
  assert.equal(FakeSocket.opened.length, 1);
});

test("backoff grows exponentially with jitter and stays under its ceiling", () => {
  const opts = { minMs: 100, maxMs: 1000 };
  assert.equal(backoffDelay(0, opts, () => 0), 50);
  assert.equal(backoffDelay(0, opts, () => 1), 100);
  assert.equal(backoffDelay(3, opts, () => 1), 800);
  assert.equal(backoffDelay(10, opts, () => 1), 1000);
  assert.equal(backoffDelay(10, opts, () => 0), 500);
});

test("the sequence window forgets the oldest beyond its capacity", () => {
  const w = new SequenceWindow(2);
  assert.ok(w.admit(1) && w.admit(2) && !w.admit(1));
  assert.ok(w.admit(3));
  assert.ok(w.admit(1), "1 was evicted");
  assert.ok(w.admit(0) && w.admit(0), "transients are never duplicates");
});

test("the token fetcher may answer the token API's JSON or a string", () => {
  assert.equal(extractToken({ code: 200, message: "success", data: { token: "abc" } }), "abc");
  assert.equal(extractToken("xyz"), "xyz");
  assert.throws(() => extractToken({ code: 401, message: "bad appSecret" }), /bad appSecret/);
});
