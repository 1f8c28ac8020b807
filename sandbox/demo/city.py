"""The SYNTHETIC city: five datasets, their column specs and a deterministic generator.

Every value is made up from a seeded `random.Random`; nothing is derived from real people or firms. The
district `湖滨区` is deliberately tiny (15 residents, fewer than 10 of them visit a clinic) so that a
health-cost-by-district query has exactly one group below k and shows suppression at work.
Enterprise credit codes use the unassigned division prefix `99`, so they cannot name a real enterprise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from policy.constraints import (
    PERSONAL,
    SENSITIVE_PERSONAL,
    ColumnPolicy,
    Constraint,
    Grade,
    MaskKind,
    TablePolicy,
)

DEFAULT_SEED = 20260601
PERIOD_DAYS = 365
SMALL_DISTRICT = "湖滨区"

# Exact resident counts per district; they add up to 20,000.
DISTRICT_POPULATION: dict[str, int] = {
    "城东区": 3200,
    "城西区": 2900,
    "城南区": 2600,
    "城北区": 2300,
    "高新区": 3000,
    "经开区": 2100,
    "滨江区": 2200,
    "临港区": 1685,
    SMALL_DISTRICT: 15,
}
DISTRICTS: tuple[str, ...] = tuple(DISTRICT_POPULATION)
INCOME_BANDS: tuple[str, ...] = ("<3k", "3-5k", "5-10k", "10-20k", ">20k")

N_CLINIC_VISITS = 60_000
N_ENTERPRISES = 5_000
N_BUS_ROWS = 40_000
SMALL_DISTRICT_VISITORS = 6


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a demo dataset: DuckDB type, sensitivity tags, declared constraint and mask."""

    name: str
    type: str
    tags: tuple[str, ...]
    constraint: Constraint
    mask: MaskKind | None = None
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """One demo dataset as its provider would register it."""

    id: str
    title: str
    title_zh: str
    description: str
    domain: str
    grade: Grade
    update_frequency: str
    entity_column: str | None
    columns: tuple[ColumnSpec, ...]
    population: str | None = None


_C = Constraint
CITY_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        id="residents",
        title="Resident register (SYNTHETIC)",
        title_zh="常住人口信息（SYNTHETIC 合成数据）",
        description="SYNTHETIC resident register of a made-up city: one row per resident, generated from a "
        "fixed seed. No real person is described.",
        domain="social_management",
        grade=Grade.IMPORTANT,
        update_frequency="monthly",
        entity_column="person_id",
        population="city_person",
        columns=(
            ColumnSpec("person_id", "VARCHAR", (PERSONAL,), _C.JOIN, None, "pseudonymous resident id"),
            ColumnSpec("name", "VARCHAR", (PERSONAL,), _C.HIDDEN, None, "full name"),
            ColumnSpec("phone", "VARCHAR", (PERSONAL,), _C.AGGREGATE, MaskKind.PARTIAL, "mobile number"),
            ColumnSpec("birth_date", "DATE", (PERSONAL,), _C.GROUP, MaskKind.GENERALIZE, "date of birth"),
            ColumnSpec("district", "VARCHAR", (), _C.GROUP, None, "district of residence"),
            ColumnSpec("income_band", "VARCHAR", (PERSONAL,), _C.GROUP, None, "monthly income band, CNY"),
        ),
    ),
    DatasetSpec(
        id="clinic_visits",
        title="Clinic visits (SYNTHETIC)",
        title_zh="门诊就诊记录（SYNTHETIC 合成数据）",
        description="SYNTHETIC outpatient visits over the last 365 days; every visit references a "
        "resident of the SYNTHETIC resident register.",
        domain="health_care",
        grade=Grade.IMPORTANT,
        update_frequency="daily",
        entity_column="person_id",
        population="city_person",
        columns=(
            ColumnSpec("visit_id", "VARCHAR", (), _C.JOIN, None, "visit id"),
            ColumnSpec("person_id", "VARCHAR", (PERSONAL,), _C.JOIN, None, "resident id (residents)"),
            ColumnSpec("clinic", "VARCHAR", (), _C.GROUP, None, "hospital or community health centre"),
            ColumnSpec("visit_date", "DATE", (), _C.GROUP, None, "date of the visit"),
            ColumnSpec(
                "diagnosis_group", "VARCHAR", (SENSITIVE_PERSONAL,), _C.GROUP, None,
                "ICD chapter of the main diagnosis; declared group, overriding the hidden default",
            ),
            ColumnSpec("cost", "DECIMAL(10,2)", (), _C.AGGREGATE, None, "total cost of the visit, CNY"),
        ),
    ),
    DatasetSpec(
        id="enterprises",
        title="Registered enterprises (SYNTHETIC)",
        title_zh="企业登记信息（SYNTHETIC 合成数据）",
        description="SYNTHETIC enterprise register: made-up firms with unified social credit codes under the "
        "unassigned division prefix 99.",
        domain="economy",
        grade=Grade.GENERAL,
        update_frequency="monthly",
        entity_column="credit_code",
        population="city_enterprise",
        columns=(
            ColumnSpec("credit_code", "VARCHAR", (), _C.JOIN, None, "unified social credit code"),
            ColumnSpec("name", "VARCHAR", (), _C.OPEN, None, "registered name"),
            ColumnSpec("industry", "VARCHAR", (), _C.GROUP, None, "industry section (GB/T 4754)"),
            ColumnSpec("district", "VARCHAR", (), _C.GROUP, None, "district of registration"),
            ColumnSpec("employees", "INTEGER", (), _C.AGGREGATE, None, "insured employees"),
            ColumnSpec("registered_capital", "DECIMAL(14,2)", (), _C.AGGREGATE, None, "capital, CNY"),
        ),
    ),
    DatasetSpec(
        id="bus_ridership",
        title="Bus ridership by stop and hour (SYNTHETIC)",
        title_zh="公交站点分时客流（SYNTHETIC 合成数据）",
        description="SYNTHETIC boardings per route, stop and hour, sampled over the last 365 days.",
        domain="transport",
        grade=Grade.GENERAL,
        update_frequency="daily",
        entity_column=None,
        columns=(
            ColumnSpec("route", "VARCHAR", (), _C.OPEN, None, "bus route"),
            ColumnSpec("stop", "VARCHAR", (), _C.OPEN, None, "stop name"),
            ColumnSpec("hour", "TIMESTAMP", (), _C.OPEN, None, "start of the hour"),
            ColumnSpec("boardings", "INTEGER", (), _C.OPEN, None, "passengers boarding in that hour"),
        ),
    ),
    DatasetSpec(
        id="weather",
        title="Daily weather by district (SYNTHETIC)",
        title_zh="分区逐日天气（SYNTHETIC 合成数据）",
        description="SYNTHETIC daily mean temperature and rainfall, one row per district per day over the "
        "last 365 days.",
        domain="meteorology",
        grade=Grade.GENERAL,
        update_frequency="daily",
        entity_column=None,
        columns=(
            ColumnSpec("district", "VARCHAR", (), _C.OPEN, None, "district"),
            ColumnSpec("day", "DATE", (), _C.OPEN, None, "day"),
            ColumnSpec("temperature", "DOUBLE", (), _C.OPEN, None, "daily mean temperature, °C"),
            ColumnSpec("rain_mm", "DOUBLE", (), _C.OPEN, None, "daily rainfall, mm"),
        ),
    ),
)

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "DATE": pa.date32(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "TIMESTAMP": pa.timestamp("us"),
    "DECIMAL(10,2)": pa.decimal128(10, 2),
    "DECIMAL(14,2)": pa.decimal128(14, 2),
}


def arrow_schema(spec: DatasetSpec) -> pa.Schema:
    """The Arrow schema matching a dataset spec's declared DuckDB types."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type]) for c in spec.columns])


def city_table_policies() -> dict[str, TablePolicy]:
    """A TablePolicy per demo dataset, named by dataset id, as SQL analysis would see a fresh grant."""
    return {
        spec.id: TablePolicy(
            name=spec.id,
            columns=tuple(ColumnPolicy(c.name, c.type, c.constraint, c.tags, c.mask) for c in spec.columns),
            entity_column=spec.entity_column,
            grade=spec.grade,
            dataset_id=spec.id,
            population=spec.population,
        )
        for spec in CITY_DATASETS
    }


def city_arrow_tables(*, today: date, seed: int = DEFAULT_SEED) -> dict[str, pa.Table]:
    """The five SYNTHETIC datasets in memory, typed as declared, covering the 365 days before `today`."""
    return dict(_build(today, seed))


def generate_city(
    out_dir: Path, *, today: date, seed: int = DEFAULT_SEED, fmt: str = "csv"
) -> dict[str, Path]:
    """Write one file per SYNTHETIC dataset (UTF-8 CSV with header, or Parquet); return paths by id."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown format {fmt!r}; expected 'csv' or 'parquet'")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for dataset_id, table in _build(today, seed):
        path = out_dir / f"{dataset_id}.{fmt}"
        if fmt == "csv":
            pacsv.write_csv(_csv_ready(table), path)
        else:
            pq.write_table(table, path)
        paths[dataset_id] = path
    return paths


def _csv_ready(table: pa.Table) -> pa.Table:
    """Whole-second timestamps so the CSV reads `2026-01-02 07:00:00`, not with six zero decimals."""
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.timestamp("s")))
    return table


@lru_cache(maxsize=4)
def _build(today: date, seed: int) -> tuple[tuple[str, pa.Table], ...]:
    """Generate every dataset once per (today, seed); each dataset draws from its own seeded stream."""
    start = today - timedelta(days=PERIOD_DAYS)
    residents = _residents(random.Random(f"{seed}:residents"), today)
    columns = {
        "residents": residents.columns(),
        "clinic_visits": _clinic_visits(random.Random(f"{seed}:clinic_visits"), residents, start, today),
        "enterprises": _enterprises(random.Random(f"{seed}:enterprises")),
        "bus_ridership": _bus_ridership(random.Random(f"{seed}:bus_ridership"), start),
        "weather": _weather(random.Random(f"{seed}:weather"), start),
    }
    out = []
    for spec in CITY_DATASETS:
        schema = arrow_schema(spec)
        data = columns[spec.id]
        arrays = [pa.array(data[f.name], type=f.type) for f in schema]
        out.append((spec.id, pa.Table.from_arrays(arrays, schema=schema)))
    return tuple(out)


# --- residents ------------------------------------------------------------------------------------

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_SURNAME_CUM_WEIGHTS = tuple(
    sum(1.0 / (rank + 4) for rank in range(i + 1)) for i in range(len(_SURNAMES))
)
_GIVEN_CHARS = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建文辉玲红鹏飞宇浩然子涵欣怡梓轩博思雨晨嘉俊佳琪瑞"
    "一诺家国志海林春梅玉亮斌婷雪丹晶慧颖成凯彬健晓燕宁琳哲睿泽昊天逸安可心雅萱悦铭航"
)
_MOBILE_PREFIXES = tuple(
    [f"13{d}" for d in range(10)]
    + [f"15{d}" for d in (0, 1, 2, 3, 5, 6, 7, 8, 9)]
    + [f"18{d}" for d in range(10)]
)
_INCOME_WEIGHTS = (22, 28, 30, 14, 6)
_BIRTH_FIRST = date(1940, 1, 1).toordinal()
_BIRTH_LAST = date(2008, 12, 31).toordinal()
_BIRTH_MODE = date(1978, 6, 1).toordinal()


@dataclass(frozen=True)
class _Residents:
    """The generated register, kept column-wise so clinic visits can reference it."""

    person_id: list[str]
    name: list[str]
    phone: list[str]
    birth_date: list[date]
    district: list[str]
    income_band: list[str]
    age: list[int]

    def columns(self) -> dict[str, Sequence[object]]:
        """The register's columns by name."""
        return {
            "person_id": self.person_id,
            "name": self.name,
            "phone": self.phone,
            "birth_date": self.birth_date,
            "district": self.district,
            "income_band": self.income_band,
        }


def _residents(rng: random.Random, today: date) -> _Residents:
    """Residents with exact per-district counts, shuffled so ids say nothing about districts."""
    districts = [d for d, n in DISTRICT_POPULATION.items() for _ in range(n)]
    rng.shuffle(districts)
    n = len(districts)
    surnames = rng.choices(_SURNAMES, cum_weights=_SURNAME_CUM_WEIGHTS, k=n)
    names = []
    for surname in surnames:
        given_len = 2 if rng.random() < 0.65 else 1
        names.append(surname + "".join(rng.choices(_GIVEN_CHARS, k=given_len)))
    phones: list[str] = []
    seen: set[str] = set()
    while len(phones) < n:
        phone = rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
        if phone not in seen:
            seen.add(phone)
            phones.append(phone)
    births = [
        date.fromordinal(round(rng.triangular(_BIRTH_FIRST, _BIRTH_LAST, _BIRTH_MODE))) for _ in range(n)
    ]
    ages = [today.year - b.year for b in births]
    incomes = []
    for age in ages:
        if age < 22:
            incomes.append(rng.choices(INCOME_BANDS, weights=(70, 20, 8, 2, 0))[0])
        else:
            incomes.append(rng.choices(INCOME_BANDS, weights=_INCOME_WEIGHTS)[0])
    return _Residents(
        person_id=[f"P{i + 1:07d}" for i in range(n)],
        name=names,
        phone=phones,
        birth_date=births,
        district=districts,
        income_band=incomes,
        age=ages,
    )


# --- clinic visits --------------------------------------------------------------------------------

_HOSPITALS = ("市第一人民医院", "市第二人民医院", "市中医医院", "市妇幼保健院")
# diagnosis group -> (relative frequency, median cost in CNY at a community health centre)
_DIAGNOSES: dict[str, tuple[int, float]] = {
    "呼吸系统疾病": (22, 160.0),
    "循环系统疾病": (14, 320.0),
    "消化系统疾病": (11, 240.0),
    "内分泌、营养和代谢疾病": (10, 280.0),
    "肌肉骨骼系统和结缔组织疾病": (9, 220.0),
    "泌尿生殖系统疾病": (6, 260.0),
    "皮肤和皮下组织疾病": (5, 120.0),
    "精神和行为障碍": (3, 300.0),
    "损伤和中毒": (6, 380.0),
    "某些传染病和寄生虫病": (4, 200.0),
    "肿瘤": (2, 1500.0),
    "健康检查": (8, 150.0),
}
_DIAGNOSIS_NAMES = tuple(_DIAGNOSES)
_DIAGNOSIS_WEIGHTS = tuple(w for w, _ in _DIAGNOSES.values())
_MAX_COST_CENTS = 50_000_000


def _clinic_visits(
    rng: random.Random, residents: _Residents, start: date, today: date
) -> dict[str, Sequence[object]]:
    """Visits by residents: most big-district residents visit at least once, only a few 湖滨区 ones do."""
    small = [i for i, d in enumerate(residents.district) if d == SMALL_DISTRICT]
    big = [i for i, d in enumerate(residents.district) if d != SMALL_DISTRICT]
    small_visits = [i for i in rng.sample(small, SMALL_DISTRICT_VISITORS) for _ in range(rng.randint(1, 3))]
    visitors = [i for i in big if rng.random() < 0.85]
    extra = N_CLINIC_VISITS - len(small_visits) - len(visitors)
    weights = [1.0 + residents.age[i] / 25.0 for i in visitors]
    people = small_visits + visitors + rng.choices(visitors, weights=weights, k=extra)
    days = (today - start).days
    diagnoses = rng.choices(_DIAGNOSIS_NAMES, weights=_DIAGNOSIS_WEIGHTS, k=len(people))
    rows = []
    for person, diagnosis in zip(people, diagnoses, strict=True):
        day = start + timedelta(days=rng.randrange(days))
        in_hospital = rng.random() < 0.35
        clinic = rng.choice(_HOSPITALS) if in_hospital else f"{residents.district[person]}社区卫生服务中心"
        median = _DIAGNOSES[diagnosis][1] * (1.8 if in_hospital else 1.0)
        cents = min(_MAX_COST_CENTS, max(500, round(rng.lognormvariate(math.log(median), 0.7) * 100)))
        rows.append((day, person, clinic, diagnosis, cents))
    rows.sort(key=lambda r: (r[0], r[1]))
    return {
        "visit_id": [f"V{i + 1:08d}" for i in range(len(rows))],
        "person_id": [residents.person_id[r[1]] for r in rows],
        "clinic": [r[2] for r in rows],
        "visit_date": [r[0] for r in rows],
        "diagnosis_group": [r[3] for r in rows],
        "cost": [Decimal(r[4]).scaleb(-2) for r in rows],
    }


# --- enterprises ----------------------------------------------------------------------------------

# industry section -> name endings used for firms in it
_INDUSTRIES: dict[str, tuple[int, tuple[str, ...]]] = {
    "制造业": (16, ("机械制造", "电子科技", "新材料", "精密部件", "食品", "纺织")),
    "批发和零售业": (20, ("商贸", "贸易", "百货", "超市", "医药连锁")),
    "信息传输、软件和信息技术服务业": (10, ("软件", "网络科技", "信息技术", "数据科技")),
    "建筑业": (8, ("建筑工程", "建设", "装饰工程", "市政工程")),
    "交通运输、仓储和邮政业": (6, ("物流", "运输", "供应链管理", "仓储")),
    "住宿和餐饮业": (9, ("餐饮管理", "酒店管理", "食品店")),
    "租赁和商务服务业": (9, ("企业管理咨询", "人力资源", "广告", "会展服务")),
    "科学研究和技术服务业": (6, ("检测技术", "工程设计", "生物科技", "环保科技")),
    "房地产业": (4, ("房地产开发", "物业管理", "置业")),
    "金融业": (2, ("投资管理", "融资租赁", "保险代理")),
    "居民服务、修理和其他服务业": (5, ("家政服务", "汽车维修", "美容美发")),
    "文化、体育和娱乐业": (3, ("文化传媒", "体育发展", "影视")),
    "农、林、牧、渔业": (2, ("农业发展", "生态农业", "水产养殖")),
}
_INDUSTRY_NAMES = tuple(_INDUSTRIES)
_INDUSTRY_WEIGHTS = tuple(w for w, _ in _INDUSTRIES.values())
_BRAND_CHARS = "华瑞恒通达信鑫源泰嘉锦宏博创星海盛联兴天安汇中远明智云新邦德润丰诚"
_ENTERPRISE_DISTRICT_WEIGHTS = tuple(12 if d == SMALL_DISTRICT else n for d, n in DISTRICT_POPULATION.items())
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_MAX_CAPITAL_CENTS = 500_000_000_000


def credit_code(district_index: int, body: str) -> str:
    """An 18-character unified social credit code (GB 32100) with both check characters computed.

    The division code `9901xx` is unassigned, so a SYNTHETIC code never names a real enterprise.
    """
    org = body + _org_check(body)
    head = f"91{990101 + district_index:06d}{org}"
    total = sum(_USCC_CHARS.index(ch) * w for ch, w in zip(head, _USCC_WEIGHTS, strict=True))
    return head + _USCC_CHARS[(31 - total % 31) % 31]


def _org_check(body: str) -> str:
    """GB 11714 organization-code check character for an 8-character body."""
    total = sum(int(ch, 36) * w for ch, w in zip(body, _ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def _enterprises(rng: random.Random) -> dict[str, Sequence[object]]:
    """Firms with unique names and credit codes, spread over the districts like the population."""
    codes: list[str] = []
    names: list[str] = []
    industries: list[str] = []
    districts: list[str] = []
    employees: list[int] = []
    capital: list[Decimal] = []
    seen_codes: set[str] = set()
    seen_names: set[str] = set()
    while len(codes) < N_ENTERPRISES:
        d = rng.choices(range(len(DISTRICTS)), weights=_ENTERPRISE_DISTRICT_WEIGHTS)[0]
        code = credit_code(d, "".join(rng.choices(_USCC_CHARS, k=8)))
        industry = rng.choices(_INDUSTRY_NAMES, weights=_INDUSTRY_WEIGHTS)[0]
        brand = "".join(rng.sample(_BRAND_CHARS, 2))
        prefix = DISTRICTS[d][:2] if rng.random() < 0.3 else ""
        name = f"{prefix}{brand}{rng.choice(_INDUSTRIES[industry][1])}有限公司"
        if code in seen_codes or name in seen_names:
            continue
        seen_codes.add(code)
        seen_names.add(name)
        codes.append(code)
        names.append(name)
        industries.append(industry)
        districts.append(DISTRICTS[d])
        employees.append(min(20_000, int(rng.lognormvariate(2.3, 1.3)) + 1))
        yuan_10k = max(1, round(rng.lognormvariate(math.log(100), 1.5)))
        capital.append(Decimal(min(_MAX_CAPITAL_CENTS, yuan_10k * 1_000_000)).scaleb(-2))
    return {
        "credit_code": codes,
        "name": names,
        "industry": industries,
        "district": districts,
        "employees": employees,
        "registered_capital": capital,
    }


# --- bus ridership --------------------------------------------------------------------------------

_ROUTES = (
    *(f"{n}路" for n in (1, 2, 3, 5, 6, 8, 9, 11, 12, 15, 16, 18, 21, 23, 26, 28, 31, 35)),
    "快速1线",
    "快速2线",
)
_HUB_STOPS = ("火车站", "汽车客运站", "人民广场", "市第一人民医院", "大学城", "万达广场", "会展中心")
_OTHER_STOPS = (
    "城东区政府", "城西区政府", "城南区政府", "城北区政府", "高新区管委会", "经开区管委会", "滨江区政府",
    "临港区政府", "湖滨公园", "体育中心", "图书馆", "科技园", "软件园", "工业园", "物流园", "港口码头",
    "临港新城", "滨江公园", "植物园", "动物园", "市中医医院", "市妇幼保健院", "实验中学", "城南小学",
    "农贸市场", "水果批发市场", "中山路口", "解放路口", "建设路口", "人民路口", "和平路口", "文化路口",
    "新华路口", "东方路口", "长江路口", "黄河路口", "青年路口", "北站", "南站", "东站", "西站",
)
# relative demand by hour of day, service runs 06:00-22:59
_HOUR_PROFILE = {
    6: 0.5, 7: 1.6, 8: 1.8, 9: 1.1, 10: 0.8, 11: 0.8, 12: 0.9, 13: 0.8, 14: 0.7, 15: 0.8, 16: 1.0,
    17: 1.6, 18: 1.7, 19: 1.1, 20: 0.7, 21: 0.5, 22: 0.3,
}
_SERVICE_HOURS = tuple(_HOUR_PROFILE)


def _bus_ridership(rng: random.Random, start: date) -> dict[str, Sequence[object]]:
    """Distinct (route, stop, hour) samples with boardings shaped by hour of day, weekday and busy stops."""
    routes: list[tuple[str, list[str]]] = []
    for route in _ROUTES:
        stops = rng.sample(_HUB_STOPS, 2) + rng.sample(_OTHER_STOPS, rng.randint(7, 14))
        rng.shuffle(stops)
        routes.append((route, stops))
    stop_base = {s: (28.0 if s in _HUB_STOPS else rng.uniform(5.0, 16.0)) for s in _HUB_STOPS + _OTHER_STOPS}
    seen: set[tuple[int, int, int, int]] = set()
    rows: list[tuple[datetime, int, int, int]] = []
    while len(rows) < N_BUS_ROWS:
        r = rng.randrange(len(routes))
        s = rng.randrange(len(routes[r][1]))
        day = rng.randrange(PERIOD_DAYS)
        hour = rng.choice(_SERVICE_HOURS)
        key = (r, s, day, hour)
        if key in seen:
            continue
        seen.add(key)
        when = datetime.combine(start + timedelta(days=day), datetime.min.time()).replace(hour=hour)
        weekday_factor = 1.0 if when.weekday() < 5 else 0.7
        mean = stop_base[routes[r][1][s]] * _HOUR_PROFILE[hour] * weekday_factor
        boardings = max(0, round(rng.gauss(mean, math.sqrt(mean) + 1.0)))
        rows.append((when, r, s, boardings))
    rows.sort(key=lambda row: (row[0], row[1], row[2]))
    return {
        "route": [routes[r[1]][0] for r in rows],
        "stop": [routes[r[1]][1][r[2]] for r in rows],
        "hour": [r[0] for r in rows],
        "boardings": [r[3] for r in rows],
    }


# --- weather --------------------------------------------------------------------------------------

_DISTRICT_TEMP_OFFSET = {
    "滨江区": -0.4, SMALL_DISTRICT: -0.6, "临港区": -0.3, "高新区": 0.3, "城东区": 0.2,
}


def _weather(rng: random.Random, start: date) -> dict[str, Sequence[object]]:
    """A city-wide seasonal series with weather spells, plus a little district-level variation."""
    districts: list[str] = []
    days: list[date] = []
    temps: list[float] = []
    rain: list[float] = []
    anomaly = 0.0
    for offset in range(PERIOD_DAYS):
        day = start + timedelta(days=offset)
        doy = day.timetuple().tm_yday
        anomaly = 0.7 * anomaly + rng.gauss(0.0, 1.5)
        city_temp = 17.0 + 11.0 * math.sin(2 * math.pi * (doy - 110) / 365.0) + anomaly
        wet_chance = 0.3 + 0.15 * math.sin(2 * math.pi * (doy - 80) / 365.0)
        city_rain = rng.expovariate(1 / 9.0) if rng.random() < wet_chance else 0.0
        for district in DISTRICTS:
            districts.append(district)
            days.append(day)
            temp = city_temp + _DISTRICT_TEMP_OFFSET.get(district, 0.0) + rng.gauss(0.0, 0.4)
            temps.append(round(temp, 1))
            local = city_rain * rng.uniform(0.6, 1.4) if city_rain and rng.random() > 0.1 else 0.0
            rain.append(round(local, 1))
    return {"district": districts, "day": days, "temperature": temps, "rain_mm": rain}
