/**
 * An RFC 4180 CSV reader: comma-separated fields, records ended by CRLF or LF, fields in double
 * quotes may hold commas, line breaks and doubled quotes (`""` → `"`). Strict where the RFC is:
 * a quote inside an unquoted field, text after a closing quote, or an unterminated quoted field
 * is a `DatasetError` naming the 1-based line. Blank lines are skipped (as pandas does).
 */
import { DatasetError } from "../errors.js";

export interface CsvRecord {
  /** The 1-based line on which the record starts. */
  readonly line: number;
  readonly fields: string[];
}

export function parseCsv(file: string, text: string): CsvRecord[] {
  return [...csvRecords(file, text)];
}

/**
 * The records of `text` one at a time (a caller that keeps only some columns holds one record's
 * fields at a time, however many columns the file has).
 */
export function* csvRecords(file: string, text: string): Generator<CsvRecord> {
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; // byte-order mark
  let line = 1;
  const n = text.length;
  while (i < n) {
    const startLine = line;
    const fields: string[] = [];
    let blank = true;
    for (;;) {
      // One field.
      let value = "";
      if (text[i] === '"') {
        blank = false;
        const quoteLine = line;
        i++;
        for (;;) {
          if (i >= n) throw new DatasetError(file, quoteLine, "unterminated quoted field: add the closing double quote");
          const c = text[i]!;
          if (c === '"') {
            if (text[i + 1] === '"') {
              value += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (c === "\n") line++;
          value += c;
          i++;
        }
        const next = text[i];
        if (next !== undefined && next !== "," && next !== "\n" && !(next === "\r" && text[i + 1] === "\n")) {
          throw new DatasetError(file, line, `unexpected ${JSON.stringify(next)} after a closing quote; a quoted field must end at a comma or line end`);
        }
      } else {
        const start = i;
        while (i < n) {
          const c = text[i]!;
          if (c === "," || c === "\n" || (c === "\r" && text[i + 1] === "\n")) break;
          if (c === '"') {
            throw new DatasetError(file, line, 'double quote inside an unquoted field: enclose the field in double quotes and write a quote as ""');
          }
          i++;
        }
        value = text.slice(start, i);
        if (value.length > 0) blank = false;
      }
      fields.push(value);
      if (text[i] === ",") {
        blank = false;
        i++;
        continue;
      }
      // End of record: LF, CRLF or end of text.
      if (text[i] === "\r") i++;
      if (text[i] === "\n") {
        i++;
        line++;
      }
      break;
    }
    if (!(blank && fields.length === 1)) yield { line: startLine, fields };
  }
}
