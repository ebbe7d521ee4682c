// The web demo served at /demo: pick an account, chat one-to-one or in a topic, see
// other tabs of the same account in sync and the offline backlog after reopening.
// Built with esbuild into src/api/demo/demo.js of the gateway (npm run build:demo).

import { CourierClient, CourierRest, type Message, type TokenFetcher } from "../src/index.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);

interface Conversation {
  key: string;
  title: string;
  /** p2p: the other account; topic: undefined. */
  peer?: string;
  topicId?: number;
  messages: Message[];
  seen: Set<number>;
  unread: number;
}

const conversations = new Map<string, Conversation>();
let active: Conversation | undefined;
let me = "";
let client: CourierClient | undefined;
let rest: CourierRest | undefined;
let appId = 0;
/** Messages of the active conversation waiting to be drawn (drawn in batches). */
let toDraw: Message[] = [];
let drawing = false;

function conversation(key: string, title: string, init: Partial<Conversation>): Conversation {
  let c = conversations.get(key);
  if (!c) {
    c = { key, title, messages: [], seen: new Set(), unread: 0, ...init };
    conversations.set(key, c);
    drawList();
  }
  return c;
}

function keyOf(m: Message): Conversation {
  if (m.topicId) return conversation(`t:${m.topicId}`, `# topic ${m.topicId}`, { topicId: m.topicId });
  const peer = m.fromAccount === me ? m.toAccount : m.fromAccount;
  return conversation(`p:${peer}`, peer, { peer });
}

function add(m: Message): void {
  const c = keyOf(m);
  if (m.sequence && c.seen.has(m.sequence)) return;
  if (m.sequence) c.seen.add(m.sequence);
  // Kept in sequence order (messages of other nodes may arrive out of order).
  const at = c.messages.length && c.messages[c.messages.length - 1].sequence > m.sequence
    ? c.messages.findIndex((x) => x.sequence > m.sequence)
    : c.messages.length;
  c.messages.splice(at, 0, m);
  if (c === active) {
    if (at === c.messages.length - 1) schedule([m]);
    else redraw();
  } else {
    c.unread++;
    drawList();
  }
}

function drawList(): void {
  const ul = $("conversations");
  ul.replaceChildren(
    ...[...conversations.values()].map((c) => {
      const li = document.createElement("li");
      li.textContent = c.title;
      li.dataset.key = c.key;
      if (c === active) li.className = "active";
      if (c.unread) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(c.unread);
        li.append(badge);
      }
      li.onclick = () => open(c);
      return li;
    }),
  );
}

function open(c: Conversation): void {
  active = c;
  c.unread = 0;
  $("title").textContent = c.title;
  for (const el of [$("text"), $("compose").querySelector("button")!]) (el as HTMLInputElement).disabled = false;
  drawList();
  redraw();
}

function redraw(): void {
  $("messages").replaceChildren();
  toDraw = [];
  schedule(active ? active.messages.slice() : []);
}

/** Draws messages a batch per frame: a 10,000-message backlog keeps the page responsive. */
function schedule(messages: Message[]): void {
  toDraw.push(...messages);
  if (drawing) return;
  drawing = true;
  requestAnimationFrame(function frame() {
    const list = $("messages");
    const batch = toDraw.splice(0, 300);
    const fragment = document.createDocumentFragment();
    for (const m of batch) {
      const li = document.createElement("li");
      li.className = m.fromAccount === me ? "mine" : "";
      const from = document.createElement("span");
      from.className = "from";
      from.textContent = m.fromAccount;
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = new TextDecoder().decode(m.payload);
      const time = document.createElement("time");
      time.textContent = new Date(m.timestamp).toLocaleTimeString();
      li.append(from, text, time);
      fragment.append(li);
    }
    list.append(fragment);
    list.scrollTop = list.scrollHeight;
    if (toDraw.length) requestAnimationFrame(frame);
    else drawing = false;
  });
}

async function join(account: string): Promise<void> {
  me = account;
  const fetchToken: TokenFetcher = async () => {
    const r = await fetch("token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ account }),
    });
    const answer = await r.json();
    if (answer?.data?.appId) appId = Number(answer.data.appId);
    return answer;
  };
  // One resource per tab (kept across reloads of the tab); ?resource= to choose it.
  const resource =
    params.get("resource") ??
    sessionStorage.getItem("courier-resource") ??
    `web-${Math.random().toString(36).slice(2, 8)}`;
  sessionStorage.setItem("courier-resource", resource);
  const wsUrl = new URL("../ws", location.href);
  wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  client = new CourierClient({ url: wsUrl.href, resource, tokenFetcher: fetchToken });
  client.on("state", (s) => {
    const el = $("state");
    // A kick's reason stays on show.
    if (s === "closed" && document.body.dataset.kicked) return;
    el.className = `state ${s}`;
    el.textContent = s === "online" ? `online as ${me} (${resource})` : s;
  });
  client.on("message", (m) => add(m));
  client.on("kick", (k) => {
    $("state").className = "state closed";
    $("state").textContent = `kicked: ${k.reason}`;
    document.body.dataset.kicked = String(k.code);
  });
  client.on("pullNotice", async ({ afterSequence, beforeSequence }) => {
    let after = afterSequence;
    for (;;) {
      const page = await client!.pull(after, beforeSequence, 500);
      page.messages.forEach(add);
      if (!page.hasMore || page.messages.length === 0) break;
      after = page.messages[page.messages.length - 1].sequence;
    }
  });
  await client.login();
  rest = new CourierRest(new URL("..", location.href).href, appId, async () => {
    const answer = (await fetchToken()) as { data: { token: string } };
    return answer.data.token;
  });
  for (const t of await rest.myTopics()) {
    conversation(`t:${t.topicId}`, `# ${t.topicName}`, { topicId: Number(t.topicId) });
  }
  $("join").hidden = true;
  document.querySelector("main")!.hidden = false;
}

$("join").onsubmit = (e) => {
  e.preventDefault();
  const account = ($("account") as HTMLInputElement).value.trim();
  if (account) void join(account);
};

$("open-p2p").onsubmit = (e) => {
  e.preventDefault();
  const peer = ($("peer") as HTMLInputElement).value.trim();
  if (peer) open(conversation(`p:${peer}`, peer, { peer }));
};

$("new-topic").onsubmit = async (e) => {
  e.preventDefault();
  const name = ($("topic-name") as HTMLInputElement).value.trim();
  const members = ($("topic-members") as HTMLInputElement).value.split(",").map((s) => s.trim()).filter(Boolean);
  const view = await rest!.createTopic(name, members);
  const id = Number(view.topicInfo.topicId);
  open(conversation(`t:${id}`, `# ${name}`, { topicId: id }));
};

$("compose").onsubmit = async (e) => {
  e.preventDefault();
  const input = $("text") as HTMLInputElement;
  const text = input.value;
  if (!text || !active || !client) return;
  input.value = "";
  const target = active;
  const ack = target.topicId
    ? await client.sendTopicMessage(target.topicId, text)
    : await client.sendMessage(target.peer!, text);
  add({
    sequence: ack.sequence,
    timestamp: ack.timestamp,
    packetId: ack.packetId,
    fromUuid: 0,
    fromAccount: me,
    fromResource: "",
    toAccount: target.peer ?? "",
    topicId: target.topicId ?? 0,
    payload: new TextEncoder().encode(text),
    bizType: "",
    transient: false,
  });
};

const preset = params.get("account");
if (preset) {
  ($("account") as HTMLInputElement).value = preset;
  void join(preset);
}
