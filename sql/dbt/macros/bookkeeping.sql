{#- Two small tables dbt itself keeps (on-run-start, idempotent):
    silver.watermarks: per incremental model, the newest silver `_loaded_at` it has consumed;
      advanced in the model's own transaction (post-hook), so a failed or skipped model reads
      the same rows again next time: nothing is skipped, nothing counted twice.
    silver.quality_results: one row per check per dbt invocation, with the measured value. -#}
{% macro streamflow_bookkeeping() %}
create schema if not exists silver;
create table if not exists silver.watermarks (
    model      text        primary key,
    loaded_at  timestamptz not null,
    updated_at timestamptz not null default now()
);
create table if not exists silver.quality_results (
    invocation_id  text        not null,
    checked_at     timestamptz not null default now(),
    check_name     text        not null,
    relation       text,
    column_name    text,
    severity       text,
    status         text        not null,
    measured_value numeric,
    unit           text        not null,
    threshold      text,
    message        text,
    primary key (invocation_id, check_name)
);
create index if not exists quality_results_checked_at on silver.quality_results (checked_at);
{% endmacro %}

{#- The newest upstream `_loaded_at` this model has consumed ('-infinity' before its first run). -#}
{% macro watermark() -%}
(select coalesce(max(loaded_at), '-infinity'::timestamptz) from silver.watermarks
  where model = '{{ this.schema }}.{{ this.identifier }}')
{%- endmacro %}

{#- Post-hook: record that everything `upstreams` held when this model ran is consumed. -#}
{% macro advance_watermark(upstreams) -%}
insert into silver.watermarks (model, loaded_at)
select '{{ this.schema }}.{{ this.identifier }}',
       coalesce(greatest(
       {%- for u in upstreams %}
           (select max(_loaded_at) from {{ u }}){{ "," if not loop.last }}
       {%- endfor %}
       ), '-infinity'::timestamptz)
on conflict (model) do update set loaded_at = excluded.loaded_at, updated_at = now()
{%- endmacro %}

{%- macro lock_this() -%}
select pg_advisory_xact_lock(hashtext('streamflow.dbt:{{ this.schema }}.{{ this.identifier }}'))
{%- endmacro %}


{#- `column` newer than this model's watermark. The watermark is read twice: as a constant when
    the model is compiled, so that the planner sees how few rows qualify and uses the index (a
    comparison with a subquery's value is estimated at a third of the table, which makes it scan
    a million rows to find none), and again in the statement, inside the model's transaction
    after its lock, which is what makes it exact even if another build advanced it meanwhile. -#}
{% macro since_watermark(column='_loaded_at') -%}
    {%- set known = none -%}
    {%- if execute -%}
        {%- set found = run_query(
            "select coalesce(max(loaded_at), '-infinity'::timestamptz)::text"
            ~ " from silver.watermarks where model = '" ~ this.schema ~ "." ~ this.identifier ~ "'"
        ) -%}
        {%- set known = found.columns[0].values()[0] -%}
    {%- endif -%}
    ({{ column }} > {{ watermark() }}
    {%- if known %} and {{ column }} > '{{ known }}'::timestamptz{% endif %})
{%- endmacro %}

{#- Bronze rows loaded since this model's newest, less the look-back (see `ingest_lookback`).
    Like since_watermark: a constant for the planner, the subquery for exactness. -#}
{% macro since_last_load(column='ingested_at') -%}
    {%- set known = none -%}
    {%- if execute -%}
        {%- set found = run_query("select max(ingested_at)::text from " ~ this) -%}
        {%- set known = found.columns[0].values()[0] -%}
    {%- endif -%}
    ({{ column }} >= (select coalesce(max(ingested_at), '-infinity'::timestamptz) from {{ this }})
                     - interval '{{ var("ingest_lookback") }}'
    {%- if known %}
     and {{ column }} >= '{{ known }}'::timestamptz - interval '{{ var("ingest_lookback") }}'
    {%- endif %})
{%- endmacro %}
