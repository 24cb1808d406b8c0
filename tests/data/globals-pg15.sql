--
-- PostgreSQL database cluster dump
--

\restrict K3yK3yK3y

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "Odd Role";
ALTER ROLE "Odd Role" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 VALID UNTIL '2030-01-01 00:00:00+00';
CREATE ROLE analyst;
ALTER ROLE analyst WITH NOSUPERUSER INHERIT NOCREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE readers;
ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
COMMENT ON ROLE readers IS 'the readers; it''s fine';
CREATE ROLE repl;
ALTER ROLE repl WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE "semi;colon";
ALTER ROLE "semi;colon" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;

--
-- User Configurations
--

--
-- User Config "analyst"
--

ALTER ROLE analyst SET statement_timeout TO '17s';

--
-- User Config "readers"
--

ALTER ROLE readers SET search_path TO '$user', 'public';

--
-- User Config "semi;colon"
--

ALTER ROLE "semi;colon" SET search_path TO 'a; b', 'public';


--
-- Role memberships
--

GRANT app_owner TO analyst WITH ADMIN OPTION GRANTED BY postgres;
GRANT pg_read_all_data TO readers GRANTED BY postgres;
GRANT readers TO "Odd Role" GRANTED BY analyst;
GRANT readers TO analyst GRANTED BY postgres;




--
-- Tablespaces
--

CREATE TABLESPACE ts1 OWNER postgres LOCATION '/tmp/r16g-ts';
ALTER TABLESPACE ts1 SET (random_page_cost=2);
COMMENT ON TABLESPACE ts1 IS 'fast disk';


\unrestrict K3yK3yK3y

--
-- PostgreSQL database cluster dump complete
--

