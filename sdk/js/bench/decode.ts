// How many deliveries per second the SDK decodes, deduplicates and dispatches to a
// listener (the part of receiving that runs in the app's JavaScript), fed as the
// server sends them: DeliverBatch frames of 100 messages (the backlog) and single
// Deliver frames (live). `npm run bench`; BENCHMARKS.md has the figures.

import { create, toBinary } from "@bufbuild/protobuf";
import { FrameSchema, type Deliver } from "../src/gen/courier_pb.js";
import { CourierClient } from "../src/index.js";
import { FakeSocket } from "../test/fake-socket.js";

function deliver(sequence: number): Deliver {
  return {
    $typeName: "courier.v1.Deliver",
    sequence: BigInt(sequence),
    timestamp: BigInt(Date.now()),
    packetId: `p-${sequence}`,
    fromUuid: 2n,
    fromAccount: "bob",
    fromResource: "phone",
    toAccount: "alice",
    topicId: 0n,
    payload: new TextEncoder().encode("a message of about forty bytes of text!"),
    bizType: "",
    transient: false,
  };
}

function frames(total: number, perFrame: number, firstSeq: number): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  for (let s = firstSeq; s < firstSeq + total; s += perFrame) {
    const messages = Array.from({ length: perFrame }, (_, i) => deliver(s + i));
    const kind =
      perFrame === 1
        ? { case: "deliver" as const, value: messages[0] }
        : { case: "deliverBatch" as const, value: { $typeName: "courier.v1.DeliverBatch" as const, messages } };
    const bytes = toBinary(FrameSchema, create(FrameSchema, { kind }));
    out.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
  }
  return out;
}

async function run(label: string, total: number, perFrame: number, firstSeq: number): Promise<number> {
  FakeSocket.opened = [];
  const client = new CourierClient({
    url: "ws://bench/ws",
    resource: "bench",
    tokenFetcher: async () => "token",
    WebSocket: FakeSocket,
  });
  let received = 0;
  client.on("message", () => received++);
  const login = client.login();
  const socket = await FakeSocket.nth(1);
  await socket.acceptLogin();
  await login;
  const input = frames(total, perFrame, firstSeq);
  const start = performance.now();
  for (const data of input) socket.onmessage?.({ data });
  const secs = (performance.now() - start) / 1000;
  client.logout();
  const rate = received / secs;
  console.log(`${label}: ${received} deliveries in ${secs.toFixed(3)} s = ${Math.round(rate).toLocaleString("en")} deliveries/s`);
  return rate;
}

const rounds = Number(process.env.ROUNDS ?? 5);
for (let r = 0; r < rounds; r++) {
  await run("batches of 100", 200_000, 100, 1 + r * 1_000_000);
  await run("single frames ", 100_000, 1, 500_000 + r * 1_000_000);
}
