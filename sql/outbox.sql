-- ws-edge PostgreSQL outbox (README "Outbox and stream ingestion"). Apply once to the product's
-- database (psql -f sql/outbox.sql); it is idempotent. The product inserts a row inside its own
-- transaction; ws-edge publishes committed rows and deletes them (WS_OUTBOX_URL).
--
-- A row is one publish API body (POST /api/v1/publish): `targets` holds its target fields
-- ({"room": ...}, {"user_id": ...}, {"connection_id": ...}, or {"rooms": [...], "user_ids": [...]}),
-- `type`, `data` and `sender` the rest. The row id is the idempotency key of its sequenced targets.
-- `partition` (16 of them, from the first target; a user target counts as its room `user:<id>`, so
-- `{"user_id": "7"}` and `{"room": "user:7"}` share one) keeps a room's rows in order: one node at a time
-- publishes a partition, in id order. A custom WS_OUTBOX_TABLE needs this file with the names
-- changed: the tables `<table>` and `<table>_dead`, and the notification channel `<table>`.

CREATE TABLE IF NOT EXISTS ws_edge_outbox (
  id bigserial PRIMARY KEY,
  targets jsonb NOT NULL,
  type text NOT NULL,
  data jsonb,
  sender text,
  created_at timestamptz NOT NULL DEFAULT now(),
  partition integer NOT NULL GENERATED ALWAYS AS (
    hashtext(coalesce(targets->>'room', targets->'rooms'->>0, 'user:' || (targets->>'user_id'), 'user:' || (targets->'user_ids'->>0), targets->>'connection_id', '')) & 15
  ) STORED
);

CREATE INDEX IF NOT EXISTS ws_edge_outbox_partition ON ws_edge_outbox (partition, id);

-- Rows that can never be published (a bad room, a reserved type, data over WS_MESSAGE_MAX_SIZE, an
-- unknown target form), with the publish API's refusal code and message. Nothing reads them back.
CREATE TABLE IF NOT EXISTS ws_edge_outbox_dead (
  id bigint PRIMARY KEY,
  targets jsonb NOT NULL,
  type text NOT NULL,
  data jsonb,
  sender text,
  created_at timestamptz NOT NULL,
  failed_at timestamptz NOT NULL DEFAULT now(),
  code text NOT NULL,
  reason text NOT NULL
);

-- Wakes the nodes at commit (a notification is sent only if the transaction commits); once per
-- statement, and PostgreSQL folds identical notifications of one transaction into one.
CREATE OR REPLACE FUNCTION ws_edge_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(TG_TABLE_NAME, '');
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS ws_edge_outbox_notify ON ws_edge_outbox;
CREATE TRIGGER ws_edge_outbox_notify AFTER INSERT ON ws_edge_outbox
  FOR EACH STATEMENT EXECUTE FUNCTION ws_edge_outbox_notify();
