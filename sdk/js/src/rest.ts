// The REST calls a client may make with its own token: topics, recent contacts, the
// blacklist and history (docs/rest-api.md). Every answer is the manual's envelope
// `{code, message, data}`; a code other than 200 rejects with a CourierError.

import { CourierError } from "./client.js";

export interface TopicInfo {
  topicId: string | number;
  ownerUuid: number;
  ownerAccount: string;
  topicName: string;
  bulletin: string;
}

export interface TopicView {
  topicInfo: TopicInfo;
  members: { uuid: number; account: string }[];
}

export class CourierRest {
  /**
   * @param baseUrl the gateway's HTTP URL, e.g. `https://chat.example.com`
   * @param appId the app's id
   * @param token returns the client's current token (e.g. from the token fetcher)
   */
  constructor(
    private readonly baseUrl: string,
    private readonly appId: number | string,
    private readonly token: () => Promise<string>,
  ) {}

  /** Any call: `path` below the base URL; resolves with `data`. */
  async call<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { token: await this.token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(this.baseUrl.replace(/\/$/, "") + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let envelope: { code?: number; message?: string; data?: T };
    try {
      envelope = JSON.parse(text);
    } catch {
      throw new CourierError(response.status, `not JSON (HTTP ${response.status}): ${text.slice(0, 200)}`);
    }
    if (envelope.code !== 200) {
      throw new CourierError(envelope.code ?? response.status, envelope.message ?? `HTTP ${response.status}`);
    }
    return envelope.data as T;
  }

  private topicPath(rest = ""): string {
    return `/api/topic/${this.appId}${rest}`;
  }

  createTopic(topicName: string, accounts: string[] = []): Promise<TopicView> {
    return this.call("POST", this.topicPath(), { topicName, accounts: accounts.join(",") });
  }

  topic(topicId: number | string): Promise<TopicView> {
    return this.call("GET", this.topicPath(`/${topicId}`));
  }

  myTopics(): Promise<TopicInfo[]> {
    return this.call("GET", this.topicPath("/account"));
  }

  invite(topicId: number | string, accounts: string[]): Promise<TopicView> {
    return this.call("POST", this.topicPath(`/${topicId}/accounts`), { accounts: accounts.join(",") });
  }

  quit(topicId: number | string): Promise<unknown> {
    return this.call("DELETE", this.topicPath(`/${topicId}/account`));
  }

  kickMembers(topicId: number | string, accounts: string[]): Promise<TopicView> {
    const q = encodeURIComponent(accounts.join(","));
    return this.call("DELETE", this.topicPath(`/${topicId}/accounts?accounts=${q}`));
  }

  updateTopic(topicId: number | string, change: { topicName?: string; bulletin?: string; ownerAccount?: string }): Promise<TopicView> {
    return this.call("PUT", this.topicPath(`/${topicId}`), change);
  }

  dismiss(topicId: number | string): Promise<unknown> {
    return this.call("DELETE", this.topicPath(`/${topicId}`));
  }

  /** Recent contacts (最近通讯列表). */
  contacts(): Promise<unknown> {
    return this.call("GET", "/api/contact/");
  }

  blacklist(account: string): Promise<unknown> {
    return this.call("POST", "/api/blacklist/", { blackAccount: account });
  }

  unblacklist(account: string): Promise<unknown> {
    return this.call("DELETE", `/api/blacklist/?blackAccount=${encodeURIComponent(account)}`);
  }

  async isBlacklisted(account: string): Promise<boolean> {
    const data = await this.call<{ isBlack: boolean }>("GET", `/api/blacklist/?blackAccount=${encodeURIComponent(account)}`);
    return data.isBlack;
  }

  /** The `count` newest p2p messages between `fromAccount` and `toAccount` before `utcToTime`. */
  p2pHistory(fromAccount: string, toAccount: string, utcToTime: number, count: number): Promise<unknown> {
    return this.call("POST", "/api/msg/p2p/queryOnCount/", { appId: this.appId, fromAccount, toAccount, utcToTime, count });
  }

  /** The `count` newest messages of a topic before `utcToTime`. */
  topicHistory(account: string, topicId: number | string, utcToTime: number, count: number): Promise<unknown> {
    return this.call("POST", "/api/msg/p2t/queryOnCount/", { appId: this.appId, account, topicId, utcToTime, count });
  }
}
