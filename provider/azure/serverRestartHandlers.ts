/**
 * What the `ServerRestart` dynamic resource does: restart an Azure Database for PostgreSQL Flexible
 * Server through the ARM `restart` action, so static server parameters (wal_level,
 * max_replication_slots, max_wal_senders, shared_preload_libraries…) take effect. azure-native has no
 * resource or invoke for it (pulumi-azure-native #3618).
 *
 * Create restarts; update restarts again only when `trigger` (a hash of the static parameter values)
 * changed; read echoes state; delete does nothing. Every wait is bounded: first until the server is
 * Ready (a restart is refused while it is Updating), then until the async operation finishes.
 *
 * Plain async functions over global fetch (Node ≥ 18): the provider object in serverRestart.ts only
 * requires this module by its published path.
 */

export const DEFAULT_API_VERSION = "2025-08-01";
export const DEFAULT_ARM_ENDPOINT = "https://management.azure.com";
/** Preview sends this for values not known yet. */
const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export interface ServerRestartInputs {
  subscriptionId: string;
  resourceGroupName: string;
  serverName: string;
  /** ARM bearer token (secret). Used for the calls, never written to outputs. */
  accessToken: string;
  /** Hash of the static parameter values: a new value means restart again. */
  trigger: string;
  /** Microsoft.DBforPostgreSQL API version (default 2025-08-01). */
  apiVersion?: string;
  /** ARM base URL (default https://management.azure.com; another cloud, or a local fake in tests). */
  armEndpoint?: string;
  /** Seconds between polls when Azure sends no Retry-After (default 10). */
  pollIntervalSec?: number;
  /** Longest wait for the server to become Ready before the restart (default 900). */
  readyTimeoutSec?: number;
  /** Longest wait for the restart operation to finish (default 1800). */
  restartTimeoutSec?: number;
}

/** The state kept by Pulumi: the inputs without the token, plus what the last restart did. */
export interface ServerRestartOutputs extends Omit<ServerRestartInputs, "accessToken"> {
  /** ISO time the last restart finished. */
  restartedAt: string;
  /** Final status of the restart operation ("Succeeded"). */
  operationStatus: string;
  /** Server state seen just before the restart was requested. */
  serverStateBefore: string;
}

type Props = Record<string, unknown>;

const pick = (p: Props): ServerRestartInputs => {
  const o: ServerRestartInputs = {
    subscriptionId: p.subscriptionId as string, resourceGroupName: p.resourceGroupName as string,
    serverName: p.serverName as string, accessToken: p.accessToken as string, trigger: p.trigger as string,
  };
  for (const k of ["apiVersion", "armEndpoint"] as const) if (p[k] != null) o[k] = p[k] as string;
  for (const k of ["pollIntervalSec", "readyTimeoutSec", "restartTimeoutSec"] as const) if (p[k] != null) o[k] = Number(p[k]);
  return o;
};

/** The inputs as stored in outputs: everything but the token. */
function withoutToken(i: ServerRestartInputs): Omit<ServerRestartInputs, "accessToken"> {
  const { accessToken: _t, ...rest } = i;
  return rest;
}

/** Deterministic ID: the server's ARM ID plus "/restart". */
export function restartId(i: Pick<ServerRestartInputs, "subscriptionId" | "resourceGroupName" | "serverName">): string {
  return `${serverPath(i)}/restart`;
}

function serverPath(i: Pick<ServerRestartInputs, "subscriptionId" | "resourceGroupName" | "serverName">): string {
  const e = encodeURIComponent;
  return `/subscriptions/${e(i.subscriptionId)}/resourceGroups/${e(i.resourceGroupName)}` +
    `/providers/Microsoft.DBforPostgreSQL/flexibleServers/${e(i.serverName)}`;
}

/** https only, except plain http to a loopback fake (the token is a bearer credential). */
export function validateArmEndpoint(url: string): string | undefined {
  let u: URL;
  try { u = new URL(url); } catch { return `armEndpoint "${url}" is not a URL`; }
  const loopback = ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname);
  if (u.protocol !== "https:" && !(u.protocol === "http:" && loopback)) {
    return `armEndpoint must be https (plain http only to a loopback address), got "${url}"`;
  }
  return undefined;
}

export async function check(_olds: Props, news: Props) {
  const failures: { property: string; reason: string }[] = [];
  for (const k of ["subscriptionId", "resourceGroupName", "serverName", "accessToken", "trigger"]) {
    if (typeof news[k] !== "string" || news[k] === "") failures.push({ property: k, reason: `${k} is required (a non-empty string)` });
  }
  const name = news.serverName;
  if (typeof name === "string" && name !== UNKNOWN && !/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(name)) {
    failures.push({ property: "serverName", reason: `"${name}" is not a Flexible Server name (3-63 of a-z, 0-9, -; no leading or trailing -)` });
  }
  const ep = news.armEndpoint;
  if (typeof ep === "string" && ep !== UNKNOWN) {
    const p = validateArmEndpoint(ep);
    if (p) failures.push({ property: "armEndpoint", reason: p });
  }
  for (const k of ["pollIntervalSec", "readyTimeoutSec", "restartTimeoutSec"]) {
    const v = news[k];
    if (v != null && v !== UNKNOWN && !(typeof v === "number" && v >= 0 && Number.isFinite(v))) {
      failures.push({ property: k, reason: `${k} must be a number ≥ 0` });
    }
  }
  return { inputs: news, failures };
}

export async function diff(_id: string, olds: Props, news: Props) {
  // The token changes on every run and says nothing about the server: never a change.
  const keys = ["subscriptionId", "resourceGroupName", "serverName", "trigger", "apiVersion", "armEndpoint",
    "pollIntervalSec", "readyTimeoutSec", "restartTimeoutSec"];
  const changed = keys.filter((k) => JSON.stringify(olds[k] ?? null) !== JSON.stringify(news[k] ?? null));
  // Another server is another restart (create restarts it; delete of the old one is a no-op).
  const replaces = changed.filter((k) => k === "subscriptionId" || k === "resourceGroupName" || k === "serverName");
  return { changes: changed.length > 0, replaces, deleteBeforeReplace: false };
}

export async function create(inputs: Props): Promise<{ id: string; outs: ServerRestartOutputs }> {
  const i = pick(inputs);
  return { id: restartId(i), outs: await restartServer(i) };
}

export async function update(_id: string, olds: Props, news: Props): Promise<{ outs: ServerRestartOutputs }> {
  const i = pick(news);
  if (olds.trigger === i.trigger && typeof olds.restartedAt === "string") {
    // Only a setting of this resource changed (API version, timeouts): no restart.
    return { outs: { ...withoutToken(i), restartedAt: olds.restartedAt, operationStatus: String(olds.operationStatus ?? "Succeeded"),
      serverStateBefore: String(olds.serverStateBefore ?? "") } };
  }
  return { outs: await restartServer(i) };
}

/** State is echoed: the token in state would be stale, and a restart leaves nothing to look up. */
export async function read(id: string, props: Props) {
  return { id, props };
}

/** Nothing to undo: a restart cannot be reverted, and the server belongs to someone else. */
export async function remove(_id: string, _props: Props): Promise<void> {
  return;
}

// ---------------------------------------------------------------------------------------------------------------
// ARM calls

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** States that never become Ready without someone acting: fail at once. Any other state (Updating,
 *  Starting, Restarting, Provisioning…) becomes Ready by itself: wait, bounded. */
const HOPELESS = new Set(["stopped", "disabled", "dropping", "inaccessible", "deleted"]);

interface ArmResponse { status: number; headers: Headers; body: any; text: string }

class Arm {
  private readonly origin: string;
  constructor(private readonly base: string, private readonly token: string, private readonly server: string) {
    this.origin = new URL(base).origin;
  }

  /** One request, 60 s bound, with a few retries on network errors, 429 and 5xx. */
  async request(method: "GET" | "POST", url: string, what: string): Promise<ArmResponse> {
    if (new URL(url).origin !== this.origin) {
      // The bearer token only ever goes to the ARM endpoint configured.
      throw new Error(`ServerRestart ${this.server}: Azure asked to poll ${new URL(url).origin}, which is not the ARM endpoint ${this.origin}`);
    }
    let lastError: unknown;
    for (let attempt = 0; attempt < 4; attempt++) {
      if (attempt > 0) await sleep(Math.min(1000 * 2 ** attempt, 8000));
      let res: Response;
      try {
        res = await fetch(url, {
          method,
          headers: { Authorization: `Bearer ${this.token}`, Accept: "application/json", ...(method === "POST" ? { "Content-Type": "application/json" } : {}) },
          body: method === "POST" ? "{}" : undefined,
          signal: AbortSignal.timeout(60_000),
        });
      } catch (e) {
        lastError = e;
        continue;
      }
      const text = await res.text();
      let body: any = undefined;
      try { body = text ? JSON.parse(text) : undefined; } catch { body = undefined; }
      if ((res.status === 429 || res.status >= 500) && attempt < 3) {
        lastError = new Error(`${res.status} ${armMessage(body, text)}`);
        continue;
      }
      return { status: res.status, headers: res.headers, body, text };
    }
    throw new Error(`ServerRestart ${this.server}: ${what} failed: ${lastError instanceof Error ? lastError.message : String(lastError)}`);
  }

  url(path: string, apiVersion: string): string {
    return `${this.base.replace(/\/+$/, "")}${path}?api-version=${encodeURIComponent(apiVersion)}`;
  }
}

function armMessage(body: any, text: string): string {
  const e = body?.error ?? body;
  if (e && (e.code || e.message)) return [e.code, e.message].filter(Boolean).join(": ");
  return text.slice(0, 300) || "(empty body)";
}

function retryAfterMs(h: Headers, fallbackMs: number): number {
  const v = h.get("retry-after");
  const n = v == null ? NaN : Number(v);
  return Number.isFinite(n) && n >= 0 ? Math.min(n * 1000, 60_000) : fallbackMs;
}

/** Wait until the server is Ready; returns the state seen first (for the record). */
async function waitReady(arm: Arm, i: ServerRestartInputs, apiVersion: string, pollMs: number, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let first: string | undefined;
  for (;;) {
    const r = await arm.request("GET", arm.url(serverPath(i), apiVersion), "reading the server");
    if (r.status === 404) throw new Error(`ServerRestart: Flexible Server ${i.serverName} not found in resource group ${i.resourceGroupName} (subscription ${i.subscriptionId})`);
    if (r.status === 401 || r.status === 403) throw new Error(`ServerRestart ${i.serverName}: ARM refused the access token (${r.status}): ${armMessage(r.body, r.text)}`);
    if (r.status !== 200) throw new Error(`ServerRestart ${i.serverName}: reading the server gave ${r.status}: ${armMessage(r.body, r.text)}`);
    const state = String(r.body?.properties?.state ?? "Unknown");
    first ??= state;
    const s = state.toLowerCase();
    if (s === "ready") return first;
    if (HOPELESS.has(s)) throw new Error(`ServerRestart ${i.serverName}: the server is ${state} and cannot be restarted; start it (static parameters apply at start) or fix it, then run again`);
    if (Date.now() + pollMs > deadline) {
      throw new Error(`ServerRestart ${i.serverName}: the server was still ${state} after ${Math.round(timeoutMs / 1000)} s; not restarted (run again once it is Ready)`);
    }
    await sleep(retryAfterMs(r.headers, pollMs));
  }
}

/** Poll an Azure-AsyncOperation (status document) or Location (202 until done) URL to the end. */
async function waitOperation(arm: Arm, i: ServerRestartInputs, headers: Headers, pollMs: number, timeoutMs: number): Promise<string> {
  const asyncOp = headers.get("azure-asyncoperation");
  const location = headers.get("location");
  const deadline = Date.now() + timeoutMs;
  let delay = retryAfterMs(headers, pollMs);
  if (!asyncOp && !location) return "Succeeded"; // 202 without a handle: nothing to follow (ARM always sends one).
  for (;;) {
    if (Date.now() + delay > deadline) {
      throw new Error(`ServerRestart ${i.serverName}: the restart did not finish within ${Math.round(timeoutMs / 1000)} s (it may still complete; check the server in the portal, then run again)`);
    }
    await sleep(delay);
    if (asyncOp) {
      const r = await arm.request("GET", asyncOp, "polling the restart");
      if (r.status !== 200) throw new Error(`ServerRestart ${i.serverName}: polling the restart gave ${r.status}: ${armMessage(r.body, r.text)}`);
      const status = String(r.body?.status ?? "");
      if (status === "Succeeded") return status;
      if (status === "Failed" || status === "Canceled" || status === "Cancelled") {
        const err = r.body?.error ? `: ${armMessage(r.body.error, "")}` : "";
        throw new Error(`ServerRestart ${i.serverName}: the restart ${status.toLowerCase()}${err}`);
      }
      delay = retryAfterMs(r.headers, pollMs);
    } else {
      const r = await arm.request("GET", location!, "polling the restart");
      if (r.status === 200 || r.status === 204) return "Succeeded";
      if (r.status !== 202) throw new Error(`ServerRestart ${i.serverName}: the restart failed (${r.status}): ${armMessage(r.body, r.text)}`);
      delay = retryAfterMs(r.headers, pollMs);
    }
  }
}

/** GET server until Ready → POST restart → follow the async operation until Succeeded. */
export async function restartServer(i: ServerRestartInputs): Promise<ServerRestartOutputs> {
  const apiVersion = i.apiVersion ?? DEFAULT_API_VERSION;
  const base = i.armEndpoint ?? DEFAULT_ARM_ENDPOINT;
  const bad = validateArmEndpoint(base);
  if (bad) throw new Error(`ServerRestart ${i.serverName}: ${bad}`);
  const pollMs = (i.pollIntervalSec ?? 10) * 1000;
  const readyMs = (i.readyTimeoutSec ?? 900) * 1000;
  const restartMs = (i.restartTimeoutSec ?? 1800) * 1000;
  const arm = new Arm(base, i.accessToken, i.serverName);

  let stateBefore = "";
  for (let attempt = 0; ; attempt++) {
    const seen = await waitReady(arm, i, apiVersion, pollMs, readyMs);
    if (attempt === 0) stateBefore = seen;
    const r = await arm.request("POST", arm.url(`${serverPath(i)}/restart`, apiVersion), "requesting the restart");
    if (r.status === 409 && attempt < 3) {
      // ServerIsBusy / another operation started between our GET and POST: wait for Ready again.
      await sleep(pollMs);
      continue;
    }
    if (r.status === 401 || r.status === 403) throw new Error(`ServerRestart ${i.serverName}: ARM refused the restart (${r.status}): ${armMessage(r.body, r.text)}`);
    if (r.status === 200 || r.status === 204) {
      return { ...withoutToken(i), restartedAt: new Date().toISOString(), operationStatus: "Succeeded", serverStateBefore: stateBefore };
    }
    if (r.status !== 202) throw new Error(`ServerRestart ${i.serverName}: the restart request gave ${r.status}: ${armMessage(r.body, r.text)}`);
    const status = await waitOperation(arm, i, r.headers, pollMs, restartMs);
    return { ...withoutToken(i), restartedAt: new Date().toISOString(), operationStatus: status, serverStateBefore: stateBefore };
  }
}
