// @courier-im/sdk: a TypeScript client for the Courier messaging gateway.
export { CourierClient, CourierError, extractToken } from "./client.js";
export type {
  ClientEvents,
  ClientOptions,
  ConnectionState,
  SocketFactory,
  SocketLike,
  TokenFetcher,
} from "./client.js";
export type { LoginResult, Message, SendOptions, ServerAck } from "./codec.js";
export { PROTOCOL_VERSION, SUBPROTOCOL } from "./codec.js";
export { backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { SequenceWindow } from "./dedup.js";
export { CourierRest } from "./rest.js";
export type { TopicInfo, TopicView } from "./rest.js";
