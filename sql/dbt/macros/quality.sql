{#- on-run-end: every data test of this invocation goes into
    silver.quality_results with its status and measured value: offending rows for row checks,
    a rate (0..1) for the rate checks (tests/generic/rates.sql report parts per million), the
    newest row's age in seconds for freshness. -#}
{% macro _sql_text(value) -%}
    {%- if value is none -%}null{%- else -%}'{{ value | string | replace("'", "''") }}'{%- endif -%}
{%- endmacro %}

{% macro record_quality_results(results) %}
  {%- if execute -%}
    {%- set rows = [] -%}
    {%- for r in results -%}
      {%- set node = r.node -%}
      {%- if node.resource_type == 'test' -%}
        {%- set meta = node.config.meta or {} -%}
        {%- set ppm = meta.get('unit') == 'rate_ppm' -%}
        {%- set unit = 'rate' if ppm else meta.get('unit', 'rows') -%}
        {%- set kwargs = (node.test_metadata.kwargs if node.test_metadata else {}) -%}
        {%- set attached = node.attached_node or (node.depends_on.nodes[0] if node.depends_on.nodes else none) -%}
        {%- set measured = none if r.failures is none else ((r.failures / 1000000.0) if ppm else r.failures) -%}
        {%- set status = r.status | string -%}
        {%- do rows.append("(" ~ [
              _sql_text(invocation_id), _sql_text(node.name),
              _sql_text(attached.split('.')[-1] if attached else none),
              _sql_text(node.column_name), _sql_text(node.config.severity | lower),
              _sql_text(status), (measured if measured is not none else 'null'),
              _sql_text(unit),
              _sql_text(meta.get('threshold', kwargs.get('max_rate'))),
              _sql_text((r.message or '')[:500] if status != 'pass' else none)
            ] | join(", ") ~ ")") -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if rows -%}
insert into silver.quality_results (invocation_id, check_name, relation, column_name, severity,
    status, measured_value, unit, threshold, message)
values {{ rows | join(",\n") }}
on conflict (invocation_id, check_name) do update set status = excluded.status,
    measured_value = excluded.measured_value, message = excluded.message
    {%- endif -%}
  {%- endif -%}
{% endmacro %}
