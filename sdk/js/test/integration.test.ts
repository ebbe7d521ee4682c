// The SDK against a real `courier serve`: p2p both ways, a second device of the same
// user (multi-tab), the offline backlog after reopening, topics through REST, pulls,
// and the kick of a duplicate resource.

import { strict as assert } from "node:assert";
import { after, before, test } from "node:test";

import { CourierRest, type CourierClient, type Message } from "../src/index.js";
import { Gateway } from "./gateway.js";

let gw: Gateway;

before(async () => {
  gw = await Gateway.start();
});

after(() => gw.stop());

/** Resolves with the next `n` messages the client emits. */
function messages(c: CourierClient, n: number): Promise<Message[]> {
  return new Promise((resolve) => {
    const got: Message[] = [];
    const stop = c.on("message", (m) => {
      got.push(m);
      if (got.length === n) {
        stop();
        resolve(got);
      }
    });
  });
}

const text = (m: Message) => new TextDecoder().decode(m.payload);

test("p2p round trip, the sender's other tab, and the backlog after reopening", async () => {
  const alice = gw.client("alice", "tab1");
  const aliceTab2 = gw.client("alice", "tab2");
  const bob = gw.client("bob", "web");
  await Promise.all([alice.login(), aliceTab2.login(), bob.login()]);
  const toBob = messages(bob, 1);
  const onTab2 = messages(aliceTab2, 1);
  const ack = await alice.sendMessage("bob", "Hello B");
  assert.ok(ack.sequence > 0);
  const [got] = await toBob;
  assert.equal(text(got), "Hello B");
  assert.equal(got.sequence, ack.sequence);
  assert.equal(got.fromAccount, "alice");
  assert.equal((await onTab2)[0].sequence, ack.sequence, "the sender's other tab sees it");

  // Bob goes away; alice writes twice; bob comes back to his backlog.
  bob.logout();
  await alice.sendMessage("bob", "while away 1");
  await alice.sendMessage("bob", "while away 2");
  const bobAgain = gw.client("bob", "web");
  const backlog: [string, boolean][] = [];
  bobAgain.on("message", (m, info) => backlog.push([text(m), info.backlog]));
  const synced = new Promise((resolve) => bobAgain.on("syncDone", resolve));
  await bobAgain.login();
  await synced;
  assert.deepEqual(backlog, [["while away 1", true], ["while away 2", true]]);
  for (const c of [alice, aliceTab2, bobAgain]) c.logout();
});

test("topics: created through REST, messages fan out, older pages pulled", async () => {
  const ann = gw.client("ann", "web");
  const ben = gw.client("ben", "web");
  await Promise.all([ann.login(), ben.login()]);
  const rest = new CourierRest(gw.http, gw.app.appId, async () => {
    const answer = (await gw.tokenAnswer("ann")) as { data: { token: string } };
    return answer.data.token;
  });
  const view = await rest.createTopic("book club", ["ben"]);
  const topicId = Number(view.topicInfo.topicId);
  assert.deepEqual(view.members.map((m) => m.account).sort(), ["ann", "ben"]);
  assert.equal((await rest.myTopics()).length, 1);
  const toBen = messages(ben, 3);
  const acks = [];
  for (const t of ["one", "two", "three"]) acks.push(await ann.sendTopicMessage(topicId, t));
  const got = await toBen;
  assert.deepEqual(got.map(text), ["one", "two", "three"]);
  assert.ok(got.every((m) => m.topicId === topicId));
  // Older pages, two at a time.
  const page = await ben.pull(0, acks[2].sequence, 2);
  assert.deepEqual(page.messages.map(text), ["one", "two"]);
  for (const c of [ann, ben]) c.logout();
});

test("a second login of the same resource kicks the first", async () => {
  const first = gw.client("cat", "phone");
  await first.login();
  const kicked = new Promise<number>((resolve) => first.on("kick", (k) => resolve(k.code)));
  const second = gw.client("cat", "phone");
  await second.login();
  assert.equal(await kicked, 1);
  assert.equal(first.state, "closed");
  second.logout();
});
