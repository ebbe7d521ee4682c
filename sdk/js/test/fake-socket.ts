// A WebSocket stand-in for unit tests: records what the client sends, and lets the
// test play the server.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FrameSchema, type Frame } from "../src/gen/courier_pb.js";
import type { SocketLike } from "../src/client.js";

export class FakeSocket implements SocketLike {
  static opened: FakeSocket[] = [];
  private static openWaiters: (() => void)[] = [];
  binaryType = "arraybuffer";
  readyState = 0;
  readonly sent: Frame[] = [];
  private waiters: (() => void)[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: unknown) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocols: string | string[],
  ) {
    FakeSocket.opened.push(this);
    for (const w of FakeSocket.openWaiters.splice(0)) w();
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }

  send(data: Uint8Array): void {
    this.sent.push(fromBinary(FrameSchema, data));
    for (const w of this.waiters.splice(0)) w();
  }

  close(): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({}));
  }

  /** The server sends a frame. */
  deliver(kind: Frame["kind"]): void {
    const bytes = toBinary(FrameSchema, create(FrameSchema, { kind }));
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  /** Resolves with the first sent frame of `kind` after `from` sent frames. */
  async next(kind: NonNullable<Frame["kind"]["case"]>, from = 0): Promise<Frame> {
    for (;;) {
      const found = this.sent.slice(from).find((f) => f.kind.case === kind);
      if (found) return found;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Logs the client in: waits for its Login, answers 200. */
  async acceptLogin(account = "alice", cursor = 0): Promise<Frame> {
    const login = await this.next("login");
    this.deliver({
      case: "loginResult",
      value: {
        $typeName: "courier.v1.LoginResult",
        code: 200,
        desc: "ok",
        appId: 1n,
        uuid: 7n,
        account,
        cursor: BigInt(cursor),
        serverTime: BigInt(Date.now()),
        protocolVersion: 1,
      },
    });
    return login;
  }

  /** The server ends the connection. */
  drop(): void {
    this.close();
  }

  /** The `count`th socket a client opened (1-based), once it exists. */
  static async nth(count: number): Promise<FakeSocket> {
    while (FakeSocket.opened.length < count) {
      await new Promise<void>((resolve) => FakeSocket.openWaiters.push(resolve));
    }
    return FakeSocket.opened[count - 1];
  }
}
