from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.authtoken.views import obtain_auth_token

from shop import api, views

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("p/<str:product_id>/", views.product, name="product"),
    path("p/<str:product_id>/rate/", views.rate, name="rate"),
    path("recommendations/", views.recommendations_page, name="recommendations"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/plots/<str:name>", views.eda_plot, name="eda_plot"),
    path("healthz", views.healthz, name="healthz"),
    path("api/recommendations/", api.my_recommendations, name="api_recommendations"),
    path("api/search/", api.search, name="api_search"),
    path("api/products/<str:product_id>/similar/", api.similar, name="api_similar"),
    path("api/ratings/", api.post_rating, name="api_post_rating"),
    path("api/ratings/<str:event_id>/", api.rating_status, name="api_rating_status"),
    path("api/token/", obtain_auth_token, name="api_token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
]
