-- A small sample database for the demo (idempotent).
CREATE SCHEMA IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.customers (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE, tags text[], profile jsonb);
CREATE TABLE IF NOT EXISTS shop.orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES shop.customers, total numeric(12,2), placed_at timestamptz DEFAULT now());
INSERT INTO shop.customers (name, email, tags, profile)
SELECT 'customer ' || g, 'c' || g || '@example.com', ARRAY['tag' || (g % 7)], jsonb_build_object('tier', g % 3, 'since', 2000 + g % 25)
FROM generate_series(1, 5000) g
WHERE NOT EXISTS (SELECT 1 FROM shop.customers);
INSERT INTO shop.orders (customer_id, total)
SELECT 1 + (g % 5000), (g % 1000) / 3.0 FROM generate_series(1, 50000) g
WHERE NOT EXISTS (SELECT 1 FROM shop.orders);
CREATE OR REPLACE VIEW shop.big_spenders AS SELECT customer_id, sum(total) AS spent FROM shop.orders GROUP BY 1 HAVING sum(total) > 5000;
