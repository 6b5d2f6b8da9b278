{#- Models land in the schema they name (staging, silver, gold), not "<target>_<name>": the
    medallion schemas are an interface (the operator's CNPG Database declares them). -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
