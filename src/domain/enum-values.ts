/**
 * Every enum field of a request holds a value its enum defines. Protobuf
 * enums are open: a binary request (or JSON with a number) may carry any
 * int32, which would be stored and served back as a number no client knows
 * (`privacy` 12345). Zero, the `*_UNSPECIFIED` value, is defined; whether a
 * field may be left unspecified is each request's own rule.
 */
import type { DescEnum, DescMessage, Message, MessageShape } from "@bufbuild/protobuf";
import { isReflectMessage, reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { invalidField } from "./errors.js";

const definedValues = new WeakMap<DescEnum, Set<number>>();

function isDefined(desc: DescEnum, value: number): boolean {
  let values = definedValues.get(desc);
  if (values === undefined) definedValues.set(desc, (values = new Set(desc.values.map((v) => v.number))));
  return values.has(value);
}

function refuse(field: string, desc: DescEnum, value: number): never {
  throw invalidField(field, `${value} is not a value of ${desc.typeName}`);
}

/** Throws INVALID_ARGUMENT naming the first enum field (as a path, e.g. `filter.kinds[2]`) whose value its enum does not define. */
export function requireDefinedEnums(desc: DescMessage, message: Message): void {
  checkMessage(reflect(desc, message as MessageShape<DescMessage>), "");
}

function checkMessage(message: ReflectMessage, prefix: string): void {
  for (const field of message.fields) {
    if (!message.isSet(field)) continue;
    const path = `${prefix}${field.name}`;
    switch (field.fieldKind) {
      case "enum": {
        const value = message.get(field);
        if (!isDefined(field.enum, value)) refuse(path, field.enum, value);
        break;
      }
      case "message":
        checkMessage(message.get(field), `${path}.`);
        break;
      case "list": {
        const list = message.get(field);
        let i = 0;
        for (const item of list) {
          if (field.listKind === "enum" && !isDefined(field.enum, item as number)) refuse(`${path}[${i}]`, field.enum, item as number);
          if (field.listKind === "message" && isReflectMessage(item)) checkMessage(item, `${path}[${i}].`);
          i++;
        }
        break;
      }
      case "map":
        for (const [key, value] of message.get(field)) {
          const entry = `${path}[${JSON.stringify(String(key))}]`;
          if (field.mapKind === "enum" && !isDefined(field.enum, value as number)) refuse(entry, field.enum, value as number);
          if (field.mapKind === "message" && isReflectMessage(value)) checkMessage(value, `${entry}.`);
        }
        break;
    }
  }
}
