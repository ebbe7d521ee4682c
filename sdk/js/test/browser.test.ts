// The web demo in a real browser (the distribution's chromium driven by
// playwright-core) against a real `courier serve`: two users chat, a second tab of the
// same user stays in sync, reopening shows what arrived meanwhile, and a login of the
// same resource elsewhere kicks the first. A screenshot of a conversation is kept in
// test-artifacts/demo.png.

import { strict as assert } from "node:assert";
import { existsSync, mkdirSync } from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";

import { Gateway } from "./gateway.js";

const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const artifacts = path.resolve(import.meta.dirname, "../../test-artifacts");
let gw: Gateway;
let browser: Browser;

before(async () => {
  if (!existsSync(executablePath)) {
    throw new Error(`no browser at ${executablePath}: install the chromium package (scripts/test does) or set CHROMIUM`);
  }
  gw = await Gateway.start();
  browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  gw?.stop();
});

const WAIT = { timeout: 20_000 };

async function join(page: Page, account: string, resource?: string): Promise<void> {
  const query = new URLSearchParams({ account, ...(resource ? { resource } : {}) });
  await page.goto(`${gw.http}/demo/?${query}`);
  await page.locator("#state.online").waitFor(WAIT);
}

async function openChat(page: Page, peer: string): Promise<void> {
  await page.fill("#peer", peer);
  await page.click("#open-p2p button");
}

async function send(page: Page, text: string): Promise<void> {
  await page.fill("#text", text);
  await page.click("#compose button");
}

const shown = (page: Page, text: string) =>
  page.locator("#messages li .text", { hasText: text }).first().waitFor(WAIT);

test("two users chat; the sender's second tab stays in sync; reopening shows the backlog", async () => {
  const aliceContext = await browser.newContext();
  const bobContext = await browser.newContext();
  const alice = await aliceContext.newPage();
  const aliceTab2 = await aliceContext.newPage();
  const bob = await bobContext.newPage();
  await join(alice, "alice");
  await join(aliceTab2, "alice");
  await join(bob, "bob", "bob-web");

  await openChat(alice, "bob");
  await send(alice, "Hello Bob");
  // Bob's page lists the conversation; opening it shows the message.
  await bob.locator("#conversations li", { hasText: "alice" }).click(WAIT);
  await shown(bob, "Hello Bob");
  await send(bob, "Hi Alice");
  await shown(alice, "Hi Alice");
  // Alice's other tab got both: what she sent and the answer.
  await aliceTab2.locator("#conversations li", { hasText: "bob" }).click(WAIT);
  await shown(aliceTab2, "Hello Bob");
  await shown(aliceTab2, "Hi Alice");

  mkdirSync(artifacts, { recursive: true });
  await alice.screenshot({ path: path.join(artifacts, "demo.png") });

  // Bob closes his page; alice writes; bob reopens (same resource) and sees it.
  await bob.close();
  await send(alice, "While you were away");
  await shown(alice, "While you were away");
  const bobAgain = await bobContext.newPage();
  await join(bobAgain, "bob", "bob-web");
  await bobAgain.locator("#conversations li", { hasText: "alice" }).click(WAIT);
  await shown(bobAgain, "While you were away");
  await aliceContext.close();
  await bobContext.close();
});

test("a second login of the same resource kicks the first page", async () => {
  const context = await browser.newContext();
  const first = await context.newPage();
  await join(first, "carol", "carol-phone");
  const second = await context.newPage();
  await join(second, "carol", "carol-phone");
  await first.locator("body[data-kicked='1']").waitFor(WAIT);
  assert.match(await first.locator("#state").innerText(), /kicked/);
  await context.close();
});

test("a backlog of 10,000 messages is drawn without blocking the page", async () => {
  // 10,000 messages to dave while he is away, pushed by the app server.
  const push = async (from: number) => {
    const messages = Array.from({ length: 100 }, (_, i) => ({ toAccount: "dave", msg: `n${from + i}` }));
    for (const m of messages) {
      const r = await fetch(`${gw.http}/api/push/p2p/`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...gw.app, fromAccount: "eve", fromResource: "bot", msgType: "", ...m }),
      });
      assert.equal(r.status, 200);
    }
  };
  const batches = [];
  for (let b = 0; b < 100; b++) batches.push(push(b * 100));
  await Promise.all(batches);
  const context = await browser.newContext();
  const page = await context.newPage();
  await join(page, "dave");
  await page.locator("#conversations li", { hasText: "eve" }).click(WAIT);
  // While drawing, the page answers: a click handler runs between frames.
  const answered = await page.evaluate(
    () => new Promise<number>((resolve) => {
      const t0 = performance.now();
      setTimeout(() => resolve(performance.now() - t0), 0);
    }),
  );
  assert.ok(answered < 2000, `the page answered after ${answered} ms`);
  await page.locator("#messages li").nth(9_999).waitFor(WAIT);
  assert.equal(await page.locator("#messages li").count(), 10_000);
  await context.close();
});
