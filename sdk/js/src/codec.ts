// The wire codec: client frames to bytes, server frames to plain typed events.
// Sans-IO: no sockets here. 64-bit fields arrive as bigint from the generated code
// and leave as number (Courier keeps sequences, times and ids below 2^53).

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FrameSchema, type Deliver, type Frame } from "./gen/courier_pb.js";

/** The protocol version this SDK speaks (Login.protocol_version). */
export const PROTOCOL_VERSION = 1;
/** The WebSocket subprotocol of that version. */
export const SUBPROTOCOL = "courier.v1";

/** One message delivered to this device (p2p or topic; live, backlog or pulled). */
export interface Message {
  sequence: number;
  timestamp: number;
  packetId: string;
  fromUuid: number;
  fromAccount: string;
  fromResource: string;
  /** The recipient account (p2p); empty for a topic message. */
  toAccount: string;
  /** The topic (topic message); 0 for p2p. */
  topicId: number;
  payload: Uint8Array;
  bizType: string;
  /** Not stored (online-only / isStore=false); sequence is then 0. */
  transient: boolean;
}

/** The server's answer to a send. */
export interface ServerAck {
  packetId: string;
  sequence: number;
  timestamp: number;
  code: number;
  desc: string;
  /** For messages that are not stored: whether a device took it. */
  delivered: boolean;
}

export interface LoginResult {
  code: number;
  desc: string;
  appId: number;
  uuid: number;
  account: string;
  cursor: number;
  serverTime: number;
}

/** What a server frame means to the client. */
export type ServerEvent =
  | { kind: "loginResult"; result: LoginResult }
  | { kind: "serverAck"; ack: ServerAck }
  | { kind: "messages"; messages: Message[] }
  | { kind: "syncDone"; count: number }
  | { kind: "pullNotice"; afterSequence: number; beforeSequence: number }
  | { kind: "pullResult"; messages: Message[]; hasMore: boolean }
  | { kind: "pong"; nonce: bigint; serverTime: number }
  | { kind: "kick"; code: number; reason: string }
  | { kind: "error"; code: number; desc: string; packetId: string };

/** Options of one send. */
export interface SendOptions {
  bizType?: string;
  /** Keep the message (offline delivery, history). Default true. */
  isStore?: boolean;
  /** Deliver to online devices only; never stored. */
  onlineOnly?: boolean;
  /** p2p only: deliver only to this resource of the recipient. */
  toResource?: string;
}

function frame(kind: Frame["kind"]): Uint8Array {
  return toBinary(FrameSchema, create(FrameSchema, { kind }));
}

export function encodeLogin(token: string, resource: string): Uint8Array {
  return frame({
    case: "login",
    value: { $typeName: "courier.v1.Login", protocolVersion: PROTOCOL_VERSION, token, resource },
  });
}

export function encodeSend(
  packetId: string,
  target: { toAccount: string } | { topicId: number },
  payload: Uint8Array,
  options: SendOptions = {},
): Uint8Array {
  return frame({
    case: "send",
    value: {
      $typeName: "courier.v1.Send",
      packetId,
      toAccount: "toAccount" in target ? target.toAccount : "",
      toResource: options.toResource ?? "",
      topicId: BigInt("topicId" in target ? target.topicId : 0),
      payload,
      bizType: options.bizType ?? "",
      isStore: options.isStore,
      onlineOnly: options.onlineOnly ?? false,
    },
  });
}

export function encodeAck(sequence: number): Uint8Array {
  return frame({ case: "ack", value: { $typeName: "courier.v1.Ack", sequence: BigInt(sequence) } });
}

export function encodePing(nonce: bigint): Uint8Array {
  return frame({ case: "ping", value: { $typeName: "courier.v1.Ping", nonce } });
}

export function encodePull(afterSequence: number, beforeSequence: number, limit: number): Uint8Array {
  return frame({
    case: "pull",
    value: {
      $typeName: "courier.v1.Pull",
      afterSequence: BigInt(afterSequence),
      beforeSequence: BigInt(beforeSequence),
      limit,
    },
  });
}

export function encodeLogout(): Uint8Array {
  return frame({ case: "logout", value: { $typeName: "courier.v1.Logout" } });
}

function message(d: Deliver): Message {
  return {
    sequence: Number(d.sequence),
    timestamp: Number(d.timestamp),
    packetId: d.packetId,
    fromUuid: Number(d.fromUuid),
    fromAccount: d.fromAccount,
    fromResource: d.fromResource,
    toAccount: d.toAccount,
    topicId: Number(d.topicId),
    payload: d.payload,
    bizType: d.bizType,
    transient: d.transient,
  };
}

/** Decodes one server frame. Throws on bytes that are not a Frame. */
export function decode(bytes: Uint8Array): ServerEvent | undefined {
  const { kind } = fromBinary(FrameSchema, bytes);
  switch (kind.case) {
    case "loginResult": {
      const r = kind.value;
      return {
        kind: "loginResult",
        result: {
          code: r.code,
          desc: r.desc,
          appId: Number(r.appId),
          uuid: Number(r.uuid),
          account: r.account,
          cursor: Number(r.cursor),
          serverTime: Number(r.serverTime),
        },
      };
    }
    case "serverAck": {
      const a = kind.value;
      return {
        kind: "serverAck",
        ack: {
          packetId: a.packetId,
          sequence: Number(a.sequence),
          timestamp: Number(a.timestamp),
          code: a.code,
          desc: a.desc,
          delivered: a.delivered,
        },
      };
    }
    case "deliver":
      return { kind: "messages", messages: [message(kind.value)] };
    case "deliverBatch":
      return { kind: "messages", messages: kind.value.messages.map(message) };
    case "syncDone":
      return { kind: "syncDone", count: Number(kind.value.count) };
    case "pullNotice":
      return {
        kind: "pullNotice",
        afterSequence: Number(kind.value.afterSequence),
        beforeSequence: Number(kind.value.beforeSequence),
      };
    case "pullResult":
      return {
        kind: "pullResult",
        messages: kind.value.messages.map(message),
        hasMore: kind.value.hasMore,
      };
    case "pong":
      return { kind: "pong", nonce: kind.value.nonce, serverTime: Number(kind.value.serverTime) };
    case "kick":
      return { kind: "kick", code: kind.value.code, reason: kind.value.reason };
    case "error":
      return { kind: "error", code: kind.value.code, desc: kind.value.desc, packetId: kind.value.packetId };
    default:
      // A frame kind this version does not know (or a client-only one): ignored.
      return undefined;
  }
}
