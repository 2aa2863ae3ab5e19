/**
 * Agent pools (seed: agent_pool.rs): configuration, members, and who a
 * message reaches (`resolve_address`).
 */
import type { AgentPoolConfig, AgentPoolMember, RunAddress } from "../../../gen/mailroom/v1/pool_pb.js";
import { invalidField } from "../errors.js";
import { boundedList, requireId, requirePresent } from "../validate.js";

export const MAX_POLICIES = 32;
export const MAX_TOPICS = 64;
export const MAX_MEMBERS = 1000;

/** A pool's configuration, normalised: policy lists sorted and deduplicated, defaults filled in. */
export interface PoolConfig {
  requiredPolicyRefs: string[];
  includeSenderInPoolBroadcast: boolean;
  envelopeOnly: boolean;
  policyRefs: string[];
}

export interface Member {
  runId: string;
  agentId: string;
  policyRefs: string[];
  topics: string[];
}

function policyIds(field: string, refs: ReadonlyArray<{ id: string }>): string[] {
  boundedList(field, refs, MAX_POLICIES);
  return [...new Set(refs.map((ref, i) => requireId(`${field}[${i}].id`, ref.id)))].sort();
}

export function parseConfig(config: AgentPoolConfig | undefined): PoolConfig {
  return {
    requiredPolicyRefs: policyIds("config.message_policy.required_policy_refs", config?.messagePolicy?.requiredPolicyRefs ?? []),
    includeSenderInPoolBroadcast: config?.messagePolicy?.includeSenderInPoolBroadcast ?? false,
    // The seed's safe default: wakes see envelopes only.
    envelopeOnly: config?.wakePolicy?.envelopeOnly ?? true,
    policyRefs: policyIds("config.policy_refs", config?.policyRefs ?? []),
  };
}

export function sameConfig(a: PoolConfig, b: PoolConfig): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function parseMember(field: string, member: AgentPoolMember | undefined): Member {
  const present = requirePresent(field, member);
  boundedList(`${field}.topics`, present.topics, MAX_TOPICS);
  return {
    runId: requireId(`${field}.run_id`, present.runId),
    agentId: requireId(`${field}.agent_id`, present.agentId),
    policyRefs: policyIds(`${field}.policy_refs`, present.policyRefs),
    topics: [...new Set(present.topics.map((topic, i) => requireId(`${field}.topics[${i}]`, topic)))].sort(),
  };
}

/** Whether the member holds every one of the policies. */
export function holdsAll(member: Member, policies: readonly string[]): boolean {
  return policies.every((policy) => member.policyRefs.includes(policy));
}

/** The seed's observable member runs: members holding all of the pool's policies. */
export function observableRuns(members: readonly Member[], config: PoolConfig): string[] {
  return members.filter((member) => holdsAll(member, config.policyRefs)).map((member) => member.runId);
}

export type AddressTarget = { kind: "run"; id: string } | { kind: "agent"; id: string } | { kind: "topic"; id: string } | { kind: "pool"; id: string };

export function parseAddress(field: string, address: RunAddress | undefined, poolId: string): AddressTarget {
  const to = requirePresent(field, address);
  switch (to.target.case) {
    case "runId":
      return { kind: "run", id: requireId(`${field}.run_id`, to.target.value) };
    case "agentId":
      return { kind: "agent", id: requireId(`${field}.agent_id`, to.target.value) };
    case "topicId":
      return { kind: "topic", id: requireId(`${field}.topic_id`, to.target.value) };
    case "poolId":
      if (to.target.value !== poolId) throw invalidField(`${field}.pool_id`, `must name the pool the message is sent in (${JSON.stringify(poolId)})`);
      return { kind: "pool", id: to.target.value };
    default:
      throw invalidField(`${field}.target`, "is required: one of run_id, agent_id, topic_id or pool_id");
  }
}

/**
 * Who a message reaches (seed: resolve_address): the members the address
 * names who hold every policy the message carries; a pool broadcast leaves
 * the sender out unless the pool includes it; sorted, each run once.
 */
export function resolveRecipients(target: AddressTarget, from: string, messagePolicies: readonly string[], members: readonly Member[], config: PoolConfig): string[] {
  let candidates: Member[];
  switch (target.kind) {
    case "run":
      candidates = members.filter((m) => m.runId === target.id);
      break;
    case "agent":
      candidates = members.filter((m) => m.agentId === target.id);
      break;
    case "topic":
      candidates = members.filter((m) => m.topics.includes(target.id));
      break;
    case "pool":
      candidates = [...members];
      break;
  }
  let runs = candidates.filter((m) => holdsAll(m, messagePolicies)).map((m) => m.runId);
  if (target.kind === "pool" && !config.includeSenderInPoolBroadcast) runs = runs.filter((run) => run !== from);
  return [...new Set(runs)].sort();
}

/** Policies the pool requires of every message that the message does not carry. */
export function missingRequiredPolicies(config: PoolConfig, messagePolicies: readonly string[]): string[] {
  return config.requiredPolicyRefs.filter((policy) => !messagePolicies.includes(policy));
}
