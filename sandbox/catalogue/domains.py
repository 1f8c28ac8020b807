"""Data domains named in the source documents (see shared domain.md), as stable codes."""

from __future__ import annotations

DOMAINS: dict[str, tuple[str, str]] = {
    "transport": ("Transport", "交通运输"),
    "meteorology": ("Meteorology", "气象服务"),
    "employment": ("Employment and entrepreneurship", "就业创业"),
    "agriculture": ("Agriculture and rural affairs", "农业农村"),
    "economy": ("Economic operation", "经济运行"),
    "logistics_trade": ("Logistics and trade", "物流贸易"),
    "natural_resources": ("Natural resources", "自然资源"),
    "social_insurance": ("Social insurance", "社会保险"),
    "autonomous_driving": ("Autonomous driving", "智能驾驶"),
    "emergency_management": ("Emergency management", "应急管理"),
    "satellite_remote_sensing": ("Satellite remote sensing", "卫星遥感"),
    "health_care": ("Health care", "医疗健康"),
    "social_credit": ("Social credit", "社会信用"),
    "social_management": ("Social management", "社会管理"),
    "intellectual_property": ("Intellectual property", "知识产权"),
    "low_altitude_economy": ("Low-altitude economy", "低空经济"),
    "green_low_carbon": ("Green and low-carbon", "绿色低碳"),
    "science_education": ("Science and education", "科技教育"),
    "grassroots_governance": ("Grassroots governance", "基层治理"),
    "marine_economy": ("Marine economy", "海洋经济"),
    "financial_risk_control": ("Financial risk control", "金融风险防控"),
    "ecology_environment": ("Ecology and environment", "生态环境保护"),
    "culture_tourism": ("Culture and tourism", "文化旅游消费"),
    "private_economy": ("Private economy development", "民营经济发展"),
    "other": ("Other", "其他"),
}
