// A real `courier serve` for the SDK's integration tests: started on 127.0.0.1 with a
// fresh data dir, stopped by `stop()`. The binary is $COURIER_BIN, else the repository's
// target/debug/courier (what `cargo test` builds), else target/release/courier.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import WebSocket from "ws";

import { CourierClient, type ClientOptions, type SocketFactory } from "../src/index.js";

const repo = resolve(import.meta.dirname, "../../../..");

function binary(): string {
  const candidates = [
    process.env.COURIER_BIN,
    join(repo, "target/debug/courier"),
    join(repo, "target/release/courier"),
  ].filter((c): c is string => !!c);
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`no courier binary (tried ${candidates.join(", ")}); run cargo build`);
  return found;
}

export class Gateway {
  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly http: string,
    readonly app: { appId: string; appKey: string; appSecret: string },
  ) {}

  static async start(args: string[] = []): Promise<Gateway> {
    const dir = mkdtempSync(join(tmpdir(), "courier-sdk-"));
    const child = spawn(binary(), ["serve", "--listen", "127.0.0.1:0", "--data-dir", dir, ...args], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, RUST_LOG: "warn" },
    });
    const lines = createInterface({ input: child.stdout! });
    let http = "";
    const app = { appId: "", appKey: "", appSecret: "" };
    for await (const line of lines) {
      const t = line.trim();
      if (t.startsWith("courier listening on ")) http = t.slice("courier listening on ".length);
      if (t.startsWith("appId:")) app.appId = t.split(/\s+/)[1];
      if (t.startsWith("appKey:")) app.appKey = t.split(/\s+/)[1];
      if (t.startsWith("appSecret:")) {
        app.appSecret = t.split(/\s+/)[1];
        break;
      }
    }
    // Keep reading so the server never blocks on a full pipe.
    lines.on("line", () => {});
    if (!http || !app.appSecret) throw new Error("courier serve did not print its URL and app");
    return new Gateway(child, dir, http, app);
  }

  get ws(): string {
    return this.http.replace(/^http/, "ws") + "/ws";
  }

  /** What an app's back end does for its client: the token API's answer, as is. */
  async tokenAnswer(account: string): Promise<unknown> {
    const response = await fetch(`${this.http}/api/account/token`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...this.app, appAccount: account }),
    });
    return response.json();
  }

  client(account: string, resource: string, extra: Partial<ClientOptions> = {}): CourierClient {
    return new CourierClient({
      url: this.ws,
      resource,
      tokenFetcher: () => this.tokenAnswer(account),
      WebSocket: WebSocket as unknown as SocketFactory,
      backoff: { minMs: 20, maxMs: 200 },
      ackDelayMs: 10,
      ...extra,
    });
  }

  stop(): void {
    this.child.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}
